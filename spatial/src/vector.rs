//! Points on the unit sphere.

/// A point on the unit sphere (x, y, z), the compact form regions are stored
/// in. `(ra, dec) = (0, 0)` is `(1, 0, 0)`; the north pole is `(0, 0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitVector {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

impl UnitVector {
    /// From right ascension and declination in degrees (finite; the caller
    /// checks ranges).
    pub fn from_lonlat_deg(ra: f64, dec: f64) -> Self {
        Self::from_lonlat_rad(ra.to_radians(), dec.to_radians())
    }

    /// From longitude and latitude in radians (cdshealpix's unit).
    pub fn from_lonlat_rad(ra: f64, dec: f64) -> Self {
        Self {
            x: dec.cos() * ra.cos(),
            y: dec.cos() * ra.sin(),
            z: dec.sin(),
        }
    }

    /// Longitude and latitude in radians (atan2 range for longitude).
    pub fn to_lonlat_rad(self) -> (f64, f64) {
        (self.y.atan2(self.x), self.z.clamp(-1.0, 1.0).asin())
    }

    /// Right ascension in [0, 360) and declination in [-90, 90], degrees.
    pub fn to_lonlat_deg(self) -> (f64, f64) {
        let ra = self.y.atan2(self.x).to_degrees();
        let ra = if ra < 0.0 { ra + 360.0 } else { ra };
        let dec = self.z.clamp(-1.0, 1.0).asin().to_degrees();
        (if ra >= 360.0 { 0.0 } else { ra }, dec)
    }

    pub fn dot(self, o: Self) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    pub fn cross(self, o: Self) -> Self {
        Self {
            x: self.y * o.z - self.z * o.y,
            y: self.z * o.x - self.x * o.z,
            z: self.x * o.y - self.y * o.x,
        }
    }

    pub fn norm(self) -> f64 {
        self.dot(self).sqrt()
    }

    /// This vector scaled to length 1 (`None` for the zero vector).
    pub fn normalized(self) -> Option<Self> {
        let n = self.norm();
        (n > 0.0 && n.is_finite()).then(|| Self {
            x: self.x / n,
            y: self.y / n,
            z: self.z / n,
        })
    }

    /// The angle between two unit vectors, radians, accurate for small
    /// and large angles (atan2 of |a×b| and a·b).
    pub fn angle_to(self, o: Self) -> f64 {
        self.cross(o).norm().atan2(self.dot(o))
    }

    /// The component-wise sum (not normalized).
    pub fn plus(self, o: Self) -> Self {
        Self {
            x: self.x + o.x,
            y: self.y + o.y,
            z: self.z + o.z,
        }
    }

    /// The component-wise difference (not normalized).
    pub fn minus(self, o: Self) -> Self {
        Self {
            x: self.x - o.x,
            y: self.y - o.y,
            z: self.z - o.z,
        }
    }

    /// This vector times `k` (not normalized).
    pub fn scale(self, k: f64) -> Self {
        Self {
            x: self.x * k,
            y: self.y * k,
            z: self.z * k,
        }
    }

    /// The squared chord length between two unit vectors: precise for tiny
    /// angles, where `dot` near 1 loses half the digits.
    pub fn chord2(self, o: Self) -> f64 {
        let d = self.minus(o);
        d.dot(d)
    }

    /// Whether every component is finite.
    pub fn is_finite(self) -> bool {
        self.x.is_finite() && self.y.is_finite() && self.z.is_finite()
    }
}
