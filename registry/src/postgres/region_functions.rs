//! `quanta_region_overlaps(a, b)` on PostgreSQL: the SQL function SQLite's
//! connections get from Rust (`crate::sqlite::region_functions`), written
//! in PL/pgSQL, created with the registry's schema. The same predicate,
//! computed the same way in the same double-precision steps as
//! `quanta_spatial`'s `geom` module (whose comments explain the geometry):
//! true when two stored regions ([`quanta_spatial::Region::encode`]'s
//! blobs) share a point, NULL when either is NULL, and an error naming the
//! argument for a blob that is not a region. `registry/tests/backends.rs`
//! runs the same `OVERLAPS` queries on both backends and requires the same
//! rows.
//!
//! Why PL/pgSQL and not an extension: the registry must run on a stock
//! server where its user is no superuser. The cost is speed, about a
//! hundred microseconds a call: fine for `--where` predicates over the
//! records a query selects; spatial joins do not call it (their overlaps
//! are kept at insert).

/// The functions, in creation order (`CREATE OR REPLACE`: the DDL may run
/// again).
pub(crate) const REGION_FUNCTIONS_DDL: &str = r#"
-- The little-endian IEEE 754 double at byte `at` of `b`, exactly.
CREATE OR REPLACE FUNCTION quanta_f64le(b bytea, at integer) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN e = 2047 THEN 'NaN'::float8
              WHEN e = 0 THEN m::float8 * power(2::float8, -1074)
              ELSE (4503599627370496 + m)::float8 * power(2::float8, e - 1075) END
         * CASE WHEN s = 1 THEN -1::float8 ELSE 1::float8 END
  FROM (SELECT get_byte(b, at + 7) >> 7 AS s,
               ((get_byte(b, at + 7) & 127) << 4) | (get_byte(b, at + 6) >> 4) AS e,
               ((get_byte(b, at + 6) & 15)::bigint << 48)
               | (get_byte(b, at + 5)::bigint << 40) | (get_byte(b, at + 4)::bigint << 32)
               | (get_byte(b, at + 3)::bigint << 24) | (get_byte(b, at + 2)::bigint << 16)
               | (get_byte(b, at + 1)::bigint << 8) | get_byte(b, at)::bigint AS m) AS bits
$$;

-- A region blob as numbers: a polygon's vertices, then its inward edge
-- normals (x y z each, `n` vertices: 6n numbers); a circle's center and
-- radius in radians (4 numbers). `arg` names the argument in errors.
CREATE OR REPLACE FUNCTION quanta_region_decode(b bytea, arg integer) RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  len integer := length(b);
  tag integer;
  n integer;
  out float8[] := '{}';
  raw float8[] := '{}';
  x float8; y float8; z float8; norm float8; total float8 := 0;
  i integer; j integer; k integer;
BEGIN
  IF len = 0 THEN
    RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: an empty blob', arg;
  END IF;
  tag := get_byte(b, 0);
  IF tag = 2 THEN
    IF len <> 33 THEN
      RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: a circle blob of % bytes (expected 33)', arg, len;
    END IF;
    n := 1;
  ELSIF tag = 1 THEN
    IF (len - 1) % 24 <> 0 OR (len - 1) / 24 < 3 THEN
      RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: a polygon blob of % bytes (expected 1 + 24 per vertex, at least 3 vertices)', arg, len;
    END IF;
    n := (len - 1) / 24;
  ELSE
    RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: unknown region tag %', arg, tag;
  END IF;
  FOR i IN 0 .. n - 1 LOOP
    x := quanta_f64le(b, 1 + 24 * i);
    y := quanta_f64le(b, 9 + 24 * i);
    z := quanta_f64le(b, 17 + 24 * i);
    IF x = 'NaN' OR y = 'NaN' OR z = 'NaN' OR abs(x * x + y * y + z * z - 1) > 1e-9 THEN
      RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: not a unit vector at byte %', arg, 1 + 24 * i;
    END IF;
    out := out || ARRAY[x, y, z];
  END LOOP;
  IF tag = 2 THEN
    x := quanta_f64le(b, 25);
    IF x = 'NaN' OR x < 0 OR x >= 180 THEN
      RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: circle radius %: must be a number of degrees in [0, 180)', arg, x;
    END IF;
    RETURN out || radians(x);
  END IF;
  -- Edge normals a[i] x a[i+1], normalized; flipped inward when the turns
  -- sum negative.
  FOR i IN 0 .. n - 1 LOOP
    j := (i + 1) % n;
    x := out[3*i+2] * out[3*j+3] - out[3*i+3] * out[3*j+2];
    y := out[3*i+3] * out[3*j+1] - out[3*i+1] * out[3*j+3];
    z := out[3*i+1] * out[3*j+2] - out[3*i+2] * out[3*j+1];
    norm := sqrt(x * x + y * y + z * z);
    IF NOT norm > 0 THEN
      RAISE EXCEPTION 'quanta_region_overlaps: argument % is not a readable region: a polygon with a degenerate edge', arg;
    END IF;
    raw := raw || ARRAY[x / norm, y / norm, z / norm];
  END LOOP;
  FOR k IN 0 .. n - 1 LOOP
    i := (k + n - 1) % n;
    x := raw[3*i+2] * raw[3*k+3] - raw[3*i+3] * raw[3*k+2];
    y := raw[3*i+3] * raw[3*k+1] - raw[3*i+1] * raw[3*k+3];
    z := raw[3*i+1] * raw[3*k+2] - raw[3*i+2] * raw[3*k+1];
    total := total + (x * out[3*k+1] + y * out[3*k+2] + z * out[3*k+3]);
  END LOOP;
  IF total < 0 THEN
    FOR i IN 1 .. 3 * n LOOP
      raw[i] := -raw[i];
    END LOOP;
  END IF;
  RETURN out || raw;
END
$$;

-- The squared chord of an angle (radians), 4 from pi on.
CREATE OR REPLACE FUNCTION quanta_chord2_of_angle(angle float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN angle >= pi() THEN 4::float8
              ELSE (2 * sin(0.5 * greatest(angle, 0))) * (2 * sin(0.5 * greatest(angle, 0))) END
$$;

-- Whether the polygon `p` (decoded, `n` vertices) contains the point at
-- (x, y, z), `tol` radians outside counting as on it.
CREATE OR REPLACE FUNCTION quanta_polygon_contains(p float8[], n integer, x float8, y float8, z float8, tol float8)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  slack float8 := -sin(tol);
  o integer := 3 * n;
BEGIN
  FOR i IN 0 .. n - 1 LOOP
    IF p[o+3*i+1] * x + p[o+3*i+2] * y + p[o+3*i+3] * z < slack THEN
      RETURN false;
    END IF;
  END LOOP;
  RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION quanta_polygons_overlap(a float8[], b float8[], tol float8)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  na integer := array_length(a, 1) / 6;
  nb integer := array_length(b, 1) / 6;
  s0 float8; s1 float8; r0 float8; r1 float8; sa float8; sb float8;
  i2 integer; j2 integer;
BEGIN
  FOR i IN 0 .. na - 1 LOOP
    IF quanta_polygon_contains(b, nb, a[3*i+1], a[3*i+2], a[3*i+3], tol) THEN RETURN true; END IF;
  END LOOP;
  FOR j IN 0 .. nb - 1 LOOP
    IF quanta_polygon_contains(a, na, b[3*j+1], b[3*j+2], b[3*j+3], tol) THEN RETURN true; END IF;
  END LOOP;
  -- Two arcs crossing at a point inside both.
  FOR i IN 0 .. na - 1 LOOP
    i2 := (i + 1) % na;
    FOR j IN 0 .. nb - 1 LOOP
      j2 := (j + 1) % nb;
      s0 := b[3*nb+3*j+1] * a[3*i+1] + b[3*nb+3*j+2] * a[3*i+2] + b[3*nb+3*j+3] * a[3*i+3];
      s1 := b[3*nb+3*j+1] * a[3*i2+1] + b[3*nb+3*j+2] * a[3*i2+2] + b[3*nb+3*j+3] * a[3*i2+3];
      CONTINUE WHEN s0 * s1 >= 0;
      r0 := a[3*na+3*i+1] * b[3*j+1] + a[3*na+3*i+2] * b[3*j+2] + a[3*na+3*i+3] * b[3*j+3];
      r1 := a[3*na+3*i+1] * b[3*j2+1] + a[3*na+3*i+2] * b[3*j2+2] + a[3*na+3*i+3] * b[3*j2+3];
      CONTINUE WHEN r0 * r1 >= 0;
      sa := sign(s0 - s1);
      sb := sign(r0 - r1);
      IF (a[3*i2+1] * s0 - a[3*i+1] * s1) * sa * (b[3*j2+1] * r0 - b[3*j+1] * r1) * sb
       + (a[3*i2+2] * s0 - a[3*i+2] * s1) * sa * (b[3*j2+2] * r0 - b[3*j+2] * r1) * sb
       + (a[3*i2+3] * s0 - a[3*i+3] * s1) * sa * (b[3*j2+3] * r0 - b[3*j+3] * r1) * sb > 0 THEN
        RETURN true;
      END IF;
    END LOOP;
  END LOOP;
  RETURN false;
END
$$;

-- The angle (radians) between unit vectors, atan2 of |a x b| and a.b.
CREATE OR REPLACE FUNCTION quanta_angle(ax float8, ay float8, az float8, bx float8, by_ float8, bz float8)
RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT atan2(sqrt((ay * bz - az * by_) ^ 2 + (az * bx - ax * bz) ^ 2 + (ax * by_ - ay * bx) ^ 2),
               ax * bx + ay * by_ + az * bz)
$$;

-- Polygon `p` and the cap at (cx, cy, cz) of `radius` radians.
CREATE OR REPLACE FUNCTION quanta_polygon_cap_overlap(p float8[], cx float8, cy float8, cz float8, radius float8, tol float8)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  n integer := array_length(p, 1) / 6;
  o integer := 3 * n;
  reach float8 := radius + tol;
  reach2 float8 := quanta_chord2_of_angle(radius + tol);
  sin_reach float8;
  d float8; fx float8; fy float8; fz float8; fnorm float8;
  ax float8; ay float8; az float8; bx float8; by_ float8; bz float8;
  rx float8; ry float8; rz float8; dist float8; k integer;
BEGIN
  IF quanta_polygon_contains(p, n, cx, cy, cz, tol) THEN RETURN true; END IF;
  FOR i IN 0 .. n - 1 LOOP
    IF (p[3*i+1] - cx) ^ 2 + (p[3*i+2] - cy) ^ 2 + (p[3*i+3] - cz) ^ 2 <= reach2 THEN
      RETURN true;
    END IF;
  END LOOP;
  sin_reach := CASE WHEN reach >= pi() / 2 THEN 1 ELSE sin(reach) END;
  FOR i IN 0 .. n - 1 LOOP
    d := p[o+3*i+1] * cx + p[o+3*i+2] * cy + p[o+3*i+3] * cz;
    CONTINUE WHEN NOT (d < 0 AND -d <= sin_reach);
    k := (i + 1) % n;
    ax := p[3*i+1]; ay := p[3*i+2]; az := p[3*i+3];
    bx := p[3*k+1]; by_ := p[3*k+2]; bz := p[3*k+3];
    fx := cx - p[o+3*i+1] * d; fy := cy - p[o+3*i+2] * d; fz := cz - p[o+3*i+3] * d;
    fnorm := sqrt(fx * fx + fy * fy + fz * fz);
    rx := ay * bz - az * by_; ry := az * bx - ax * bz; rz := ax * by_ - ay * bx;
    IF (ay * fz - az * fy) * rx + (az * fx - ax * fz) * ry + (ax * fy - ay * fx) * rz >= 0
       AND (fy * bz - fz * by_) * rx + (fz * bx - fx * bz) * ry + (fx * by_ - fy * bx) * rz >= 0
       AND fnorm > 0 THEN
      dist := atan2(abs(d), fnorm);
    ELSE
      dist := least(quanta_angle(cx, cy, cz, ax, ay, az), quanta_angle(cx, cy, cz, bx, by_, bz));
    END IF;
    IF dist <= reach THEN RETURN true; END IF;
  END LOOP;
  RETURN false;
END
$$;

CREATE OR REPLACE FUNCTION quanta_region_overlaps(a bytea, b bytea) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  -- quanta_spatial's OVERLAP_TOLERANCE_RAD.
  tol CONSTANT float8 := 1e-12;
  va float8[] := quanta_region_decode(a, 1);
  vb float8[] := quanta_region_decode(b, 2);
  a_cap boolean := get_byte(a, 0) = 2;
  b_cap boolean := get_byte(b, 0) = 2;
BEGIN
  IF a_cap AND b_cap THEN
    RETURN (va[1] - vb[1]) ^ 2 + (va[2] - vb[2]) ^ 2 + (va[3] - vb[3]) ^ 2
           <= quanta_chord2_of_angle(va[4] + vb[4] + tol);
  ELSIF a_cap THEN
    RETURN quanta_polygon_cap_overlap(vb, va[1], va[2], va[3], va[4], tol);
  ELSIF b_cap THEN
    RETURN quanta_polygon_cap_overlap(va, vb[1], vb[2], vb[3], vb[4], tol);
  END IF;
  RETURN quanta_polygons_overlap(va, vb, tol);
END
$$;
"#;
