//! A FITS celestial WCS of the gnomonic (TAN) projection, as images carry
//! it in their header (`CTYPE1 = 'RA---TAN'`, `CTYPE2 = 'DEC--TAN'`,
//! `CRVAL1/2`, `CRPIX1/2`, `CD1_1 … CD2_2`; Calabretta & Greisen 2002,
//! without distortion terms). Pixel coordinates here are 0-based like
//! [`super::Image`] (pixel (x, y) is FITS pixel (x + 1, y + 1)).

use quanta_spatial::UnitVector;
use thiserror::Error;

/// Why a WCS was refused.
#[derive(Debug, Error, PartialEq)]
pub enum WcsError {
    #[error("WCS {what} is {value}: must be finite")]
    NotFinite { what: &'static str, value: f64 },
    #[error("WCS reference declination {0}° is outside [-90, 90]")]
    Declination(f64),
    #[error("WCS CD matrix {0:?} is singular")]
    Singular([[f64; 2]; 2]),
}

/// A TAN WCS: pixel → (ξ, η) on the tangent plane through the CD matrix,
/// then the gnomonic projection about `crval`. ξ points to increasing RA
/// (east), η to the north, both in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TanWcs {
    /// `CRVAL1`, `CRVAL2`: RA and Dec of the tangent point (degrees).
    pub crval: (f64, f64),
    /// `CRPIX1`, `CRPIX2`: the tangent point's pixel, FITS 1-based.
    pub crpix: (f64, f64),
    /// `[[CD1_1, CD1_2], [CD2_1, CD2_2]]`, degrees per pixel.
    pub cd: [[f64; 2]; 2],
}

/// The tangent point and the east and north unit vectors there.
struct Frame {
    center: UnitVector,
    east: UnitVector,
    north: UnitVector,
}

impl TanWcs {
    /// A validated WCS (finite values, |Dec| ≤ 90, an invertible CD matrix).
    pub fn new(crval: (f64, f64), crpix: (f64, f64), cd: [[f64; 2]; 2]) -> Result<Self, WcsError> {
        let values = [
            ("CRVAL1", crval.0),
            ("CRVAL2", crval.1),
            ("CRPIX1", crpix.0),
            ("CRPIX2", crpix.1),
            ("CD1_1", cd[0][0]),
            ("CD1_2", cd[0][1]),
            ("CD2_1", cd[1][0]),
            ("CD2_2", cd[1][1]),
        ];
        if let Some((what, value)) = values.into_iter().find(|(_, v)| !v.is_finite()) {
            return Err(WcsError::NotFinite { what, value });
        }
        if crval.1.abs() > 90.0 {
            return Err(WcsError::Declination(crval.1));
        }
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        if det == 0.0 || !det.is_finite() {
            return Err(WcsError::Singular(cd));
        }
        Ok(Self { crval, crpix, cd })
    }

    /// The pixel scale (degrees per pixel, geometric mean of the axes).
    pub fn pixel_scale_deg(&self) -> f64 {
        let cd = self.cd;
        (cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0]).abs().sqrt()
    }

    fn frame(&self) -> Frame {
        let (ra, dec) = (self.crval.0.to_radians(), self.crval.1.to_radians());
        Frame {
            center: UnitVector::from_lonlat_deg(self.crval.0, self.crval.1),
            east: UnitVector {
                x: -ra.sin(),
                y: ra.cos(),
                z: 0.0,
            },
            north: UnitVector {
                x: -dec.sin() * ra.cos(),
                y: -dec.sin() * ra.sin(),
                z: dec.cos(),
            },
        }
    }

    /// The sky position (unit vector) of 0-based pixel (x, y).
    pub fn pixel_to_vector(&self, x: f64, y: f64) -> UnitVector {
        let (dx, dy) = (x + 1.0 - self.crpix.0, y + 1.0 - self.crpix.1);
        let xi = (self.cd[0][0] * dx + self.cd[0][1] * dy).to_radians();
        let eta = (self.cd[1][0] * dx + self.cd[1][1] * dy).to_radians();
        let f = self.frame();
        let p = UnitVector {
            x: f.center.x + xi * f.east.x + eta * f.north.x,
            y: f.center.y + xi * f.east.y + eta * f.north.y,
            z: f.center.z + xi * f.east.z + eta * f.north.z,
        };
        // |p| ≥ 1 (the tangent plane never passes through the origin).
        p.normalized().unwrap_or(f.center)
    }

    /// RA in [0, 360) and Dec of 0-based pixel (x, y), degrees.
    pub fn pixel_to_sky(&self, x: f64, y: f64) -> (f64, f64) {
        self.pixel_to_vector(x, y).to_lonlat_deg()
    }

    /// The 0-based pixel of a sky position; `None` for a point 90° or more
    /// from the tangent point, which the projection cannot show.
    pub fn vector_to_pixel(&self, p: UnitVector) -> Option<(f64, f64)> {
        let f = self.frame();
        let d = p.dot(f.center);
        if d <= 1e-9 {
            return None;
        }
        let xi = (p.dot(f.east) / d).to_degrees();
        let eta = (p.dot(f.north) / d).to_degrees();
        let cd = self.cd;
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        let dx = (cd[1][1] * xi - cd[0][1] * eta) / det;
        let dy = (-cd[1][0] * xi + cd[0][0] * eta) / det;
        Some((dx + self.crpix.0 - 1.0, dy + self.crpix.1 - 1.0))
    }

    /// [`TanWcs::vector_to_pixel`] from RA and Dec in degrees.
    pub fn sky_to_pixel(&self, ra: f64, dec: f64) -> Option<(f64, f64)> {
        self.vector_to_pixel(UnitVector::from_lonlat_deg(ra, dec))
    }

    /// The outline of a `width`×`height` image on the sky: its four outer
    /// pixel corners (pixel edges at −0.5 and size − 0.5), in order around
    /// the image, as (RA, Dec) degrees. TAN maps straight lines to great
    /// circles, so the polygon through them is exactly the image's footprint.
    pub fn corners(&self, width: usize, height: usize) -> [(f64, f64); 4] {
        let (x1, y1) = (width as f64 - 0.5, height as f64 - 0.5);
        [(-0.5, -0.5), (x1, -0.5), (x1, y1), (-0.5, y1)].map(|(x, y)| self.pixel_to_sky(x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64), tol: f64) -> bool {
        (a.0 - b.0).abs() < tol && (a.1 - b.1).abs() < tol
    }

    #[test]
    fn reference_pixel_is_the_tangent_point_and_axes_follow_cd() {
        let s = 1.0 / 3600.0;
        // RA increasing to the left, as on the sky seen from inside.
        let wcs = TanWcs::new((0.0, 30.0), (101.0, 51.0), [[-s, 0.0], [0.0, s]]).unwrap();
        assert!(close(wcs.pixel_to_sky(100.0, 50.0), (0.0, 30.0), 1e-12));
        // One pixel to the right is 1″ of arc to the west: RA wraps below 360.
        let (ra, dec) = wcs.pixel_to_sky(101.0, 50.0);
        assert!(ra > 359.99, "{ra}");
        let arc = (360.0 - ra) * 30f64.to_radians().cos();
        assert!((arc - s).abs() < 1e-9, "{arc}");
        assert!((dec - 30.0).abs() < 1e-7);
        // One pixel up is 1″ north.
        let (_, dec) = wcs.pixel_to_sky(100.0, 51.0);
        assert!((dec - 30.0 - s).abs() < 1e-9);
        assert!((wcs.pixel_scale_deg() - s).abs() < 1e-15);
    }

    #[test]
    fn sky_to_pixel_inverts_pixel_to_sky_with_rotation() {
        let s = 2.0 / 3600.0;
        let (c, n) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
        let wcs = TanWcs::new(
            (359.95, -2.0),
            (60.5, 40.5),
            [[-s * c, s * n], [s * n, s * c]],
        )
        .unwrap();
        for (x, y) in [(0.0, 0.0), (119.0, 79.0), (-300.0, 250.0), (60.0, 40.0)] {
            let (ra, dec) = wcs.pixel_to_sky(x, y);
            let back = wcs.sky_to_pixel(ra, dec).unwrap();
            assert!(close(back, (x, y), 1e-6), "{x},{y} → {ra},{dec} → {back:?}");
        }
        // The antipode of the tangent point is not on the projection.
        assert_eq!(wcs.sky_to_pixel(179.95, 2.0), None);
    }

    #[test]
    fn bad_wcs_values_are_refused() {
        assert!(matches!(
            TanWcs::new((f64::NAN, 0.0), (1.0, 1.0), [[1.0, 0.0], [0.0, 1.0]]),
            Err(WcsError::NotFinite { what: "CRVAL1", .. })
        ));
        assert_eq!(
            TanWcs::new((0.0, 91.0), (1.0, 1.0), [[1.0, 0.0], [0.0, 1.0]]),
            Err(WcsError::Declination(91.0))
        );
        assert!(matches!(
            TanWcs::new((0.0, 0.0), (1.0, 1.0), [[1.0, 2.0], [2.0, 4.0]]),
            Err(WcsError::Singular(_))
        ));
    }
}
