"""Independent overlap truth from LSST's lsst.sphgeom for spatial/tests/sphgeom.rs.

Generates random convex polygons (convex hulls of random points in random
small caps, some around the poles and across RA 0) and circles with a fixed
seed, and prints them with sphgeom's pairwise verdicts as JSON:
{"regions": [{"polygon": [[x, y, z], ...]} | {"circle": [[x, y, z], radius_deg]}],
 "overlaps": [[i, j, bool], ...]}  (i < j),
 "interior8": [[[begin, end], ...] per region]}: the nested HEALPix level-8
 cells sphgeom finds entirely inside each region.
"""
import json
import math
import random
import sys

from lsst.sphgeom import (
    DISJOINT,
    Angle,
    Circle,
    ConvexPolygon,
    HealpixPixelization,
    LonLat,
    UnitVector3d,
)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 120
rng = random.Random(20261204)


def random_center():
    kind = rng.random()
    if kind < 0.15:  # near a pole
        return rng.uniform(0, 360), rng.choice([-1, 1]) * rng.uniform(86, 90)
    if kind < 0.3:  # across RA 0
        return rng.uniform(-3, 3) % 360, rng.uniform(-60, 60)
    # a small patch of sky, so that many pairs are close
    return rng.uniform(10, 16), rng.uniform(-3, 3)


def point_near(ra, dec, radius):
    c = UnitVector3d(LonLat.fromDegrees(ra, dec))
    # a random point within `radius` degrees of c
    north = UnitVector3d(0, 0, 1)
    east = UnitVector3d.orthogonalTo(north, c) if abs(dec) < 89.999 else UnitVector3d(0, 1, 0)
    up = UnitVector3d(c.cross(east))
    r = math.radians(radius) * math.sqrt(rng.random())
    a = rng.uniform(0, 2 * math.pi)
    v = c * math.cos(r) + (east * math.cos(a) + up * math.sin(a)) * math.sin(r)
    return UnitVector3d(v)


regions, shapes = [], []
for _ in range(N):
    ra, dec = random_center()
    size = rng.uniform(0.2, 3.0)
    if rng.random() < 0.2:
        radius = rng.uniform(0.0, size)
        c = UnitVector3d(LonLat.fromDegrees(ra, dec))
        regions.append(Circle(c, Angle.fromDegrees(radius)))
        shapes.append({"circle": [[c.x(), c.y(), c.z()], radius]})
        continue
    points = [point_near(ra, dec, size) for _ in range(rng.randint(3, 12))]
    poly = ConvexPolygon.convexHull(points)
    regions.append(poly)
    shapes.append({"polygon": [[v.x(), v.y(), v.z()] for v in poly.getVertices()]})

overlaps = []
for i in range(N):
    for j in range(i + 1, N):
        disjoint = bool(regions[i].relate(regions[j]) & DISJOINT)
        overlaps.append([i, j, not disjoint])
level8 = HealpixPixelization(8)
interior = [[[int(b), int(e)] for b, e in level8.interior(r)] for r in regions]
json.dump({"regions": shapes, "overlaps": overlaps, "interior8": interior}, sys.stdout)
