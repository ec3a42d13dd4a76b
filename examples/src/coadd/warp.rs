//! Resampling onto a patch grid and stacking: the algorithms of the coadd
//! tasks, independent of the task API.

use quanta_spatial::UnitVector;

use crate::fits::{Image, ImageError, TanWcs, WcsError};

/// The pixel grid of a patch: a TAN projection about the centre of its
/// vertices, RA increasing to the left, sized to the vertices' bounding
/// box on that plane at `scale_deg` per pixel.
pub fn patch_grid(
    vertices: &[UnitVector],
    scale_deg: f64,
) -> Result<(TanWcs, usize, usize), WcsError> {
    let sum = vertices.iter().fold(
        UnitVector {
            x: 0.0,
            y: 0.0,
            z: 0.0,
        },
        |a, v| UnitVector {
            x: a.x + v.x,
            y: a.y + v.y,
            z: a.z + v.z,
        },
    );
    let center = sum.normalized().unwrap_or(UnitVector {
        x: 1.0,
        y: 0.0,
        z: 0.0,
    });
    let (ra, dec) = center.to_lonlat_deg();
    // A unit-scale probe WCS gives tangent-plane degrees (ξ = −x, η = y).
    let probe = TanWcs::new((ra, dec), (1.0, 1.0), [[-1.0, 0.0], [0.0, 1.0]])?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for v in vertices {
        if let Some((x, y)) = probe.vector_to_pixel(*v) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
    }
    let nx = (((x1 - x0) / scale_deg).ceil() as usize).max(1);
    let ny = (((y1 - y0) / scale_deg).ceil() as usize).max(1);
    let (xc, yc) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    // Put the box centre (probe pixel (xc, yc), i.e. ξ = −xc, η = yc) at
    // the grid's central pixel.
    let crpix = (
        1.0 + (nx as f64 - 1.0) / 2.0 - xc / scale_deg,
        1.0 + (ny as f64 - 1.0) / 2.0 - yc / scale_deg,
    );
    let wcs = TanWcs::new((ra, dec), crpix, [[-scale_deg, 0.0], [0.0, scale_deg]])?;
    Ok((wcs, nx, ny))
}

/// Bilinear value of `image` at 0-based (x, y); `None` outside the pixel
/// centres or where a neighbour is not finite.
fn bilinear(image: &Image, x: f64, y: f64) -> Option<f32> {
    let (w, h) = (image.width() as f64, image.height() as f64);
    if !(x >= 0.0 && y >= 0.0 && x <= w - 1.0 && y <= h - 1.0) {
        return None;
    }
    let (ix, iy) = (x.floor() as usize, y.floor() as usize);
    let (fx, fy) = (x - ix as f64, y - iy as f64);
    let at = |dx: usize, dy: usize| {
        let (px, py) = (
            (ix + dx).min(image.width() - 1),
            (iy + dy).min(image.height() - 1),
        );
        image.get(px, py).map(f64::from)
    };
    let v = (1.0 - fx) * (1.0 - fy) * at(0, 0)?
        + fx * (1.0 - fy) * at(1, 0)?
        + (1.0 - fx) * fy * at(0, 1)?
        + fx * fy * at(1, 1)?;
    v.is_finite().then_some(v as f32)
}

/// Resamples each `(image, wcs)` onto the grid `(wcs, nx, ny)`: per warp
/// pixel, its sky position through the grid's WCS, then the calexp pixel
/// through the calexp's, then a bilinear sample. The first image covering
/// a pixel wins (detectors do not overlap); NaN where none does.
pub fn resample(
    inputs: &[(&Image, TanWcs)],
    grid: &TanWcs,
    nx: usize,
    ny: usize,
) -> Result<Image, ImageError> {
    let mut warp = Image::filled(nx, ny, f32::NAN)?;
    for j in 0..ny {
        for i in 0..nx {
            let sky = grid.pixel_to_vector(i as f64, j as f64);
            let value = inputs.iter().find_map(|(image, wcs)| {
                let (x, y) = wcs.vector_to_pixel(sky)?;
                bilinear(image, x, y)
            });
            if let Some(v) = value {
                warp.pixels_mut()[j * nx + i] = v;
            }
        }
    }
    Ok(warp)
}

/// Per pixel, the mean of the finite pixels of `warps` weighted by
/// `1/σ²` of each warp (its calexps' sky noise); NaN where none is finite.
pub fn stack(warps: &[(&Image, f64)]) -> Result<Image, ImageError> {
    let Some((first, _)) = warps.first() else {
        return Image::filled(1, 1, f32::NAN);
    };
    let (w, h) = (first.width(), first.height());
    let mut sum = vec![0.0f64; w * h];
    let mut weight = vec![0.0f64; w * h];
    for (image, sigma) in warps {
        if (image.width(), image.height()) != (w, h) {
            return Err(ImageError::ShapeMismatch {
                what: "stacking warps",
                a_w: w,
                a_h: h,
                b_w: image.width(),
                b_h: image.height(),
            });
        }
        let wt = 1.0 / (sigma * sigma);
        for (k, v) in image.pixels().iter().enumerate() {
            if v.is_finite() {
                sum[k] += wt * f64::from(*v);
                weight[k] += wt;
            }
        }
    }
    let px = sum
        .iter()
        .zip(&weight)
        .map(|(s, wt)| if *wt > 0.0 { (s / wt) as f32 } else { f32::NAN })
        .collect();
    Image::new(w, h, px)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: f64 = 2.0 / 3600.0;

    fn square(ra: f64, dec: f64, half: f64) -> Vec<UnitVector> {
        [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
            .iter()
            .map(|(a, b)| UnitVector::from_lonlat_deg(ra + a * half, dec + b * half))
            .collect()
    }

    #[test]
    fn a_star_lands_at_its_sky_position_on_the_warp() {
        // A calexp about RA 359.99 with a star at pixel (30, 40), rotated.
        let (c, n) = (10f64.to_radians().cos(), 10f64.to_radians().sin());
        let wcs = TanWcs::new(
            (359.99, 1.0),
            (50.0, 50.0),
            [[-S * c, S * n], [S * n, S * c]],
        )
        .unwrap();
        let mut calexp = Image::filled(100, 100, 0.0).unwrap();
        calexp.pixels_mut()[40 * 100 + 30] = 1000.0;
        let star = wcs.pixel_to_vector(30.0, 40.0);
        let (grid, nx, ny) = patch_grid(&square(0.0, 1.0, 0.03), S).unwrap();
        let warp = resample(&[(&calexp, wcs)], &grid, nx, ny).unwrap();
        let (sx, sy) = grid.vector_to_pixel(star).unwrap();
        let (bx, by) = (sx.round() as usize, sy.round() as usize);
        let peak = (0..nx * ny)
            .filter(|k| warp.pixels()[*k].is_finite())
            .max_by(|a, b| warp.pixels()[*a].total_cmp(&warp.pixels()[*b]))
            .unwrap();
        assert_eq!((peak % nx, peak / nx), (bx, by), "star at {sx},{sy}");
        assert!(warp.get(bx, by).unwrap() > 200.0);
    }

    #[test]
    fn a_calexp_off_the_patch_gives_an_all_nan_warp() {
        let wcs = TanWcs::new((10.0, 1.0), (50.0, 50.0), [[-S, 0.0], [0.0, S]]).unwrap();
        let calexp = Image::filled(100, 100, 5.0).unwrap();
        let (grid, nx, ny) = patch_grid(&square(0.0, 1.0, 0.02), S).unwrap();
        let warp = resample(&[(&calexp, wcs)], &grid, nx, ny).unwrap();
        assert!(warp.pixels().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn a_stack_is_the_mean_where_both_cover() {
        let a = Image::new(3, 1, vec![1.0, 2.0, f32::NAN]).unwrap();
        let b = Image::new(3, 1, vec![3.0, f32::NAN, f32::NAN]).unwrap();
        let c = stack(&[(&a, 2.0), (&b, 2.0)]).unwrap();
        assert_eq!(c.get(0, 0), Some(2.0));
        assert_eq!(c.get(1, 0), Some(2.0));
        assert!(c.get(2, 0).unwrap().is_nan());
        // Inverse-variance weights: σ 1 against σ 2 weighs 4:1.
        let d = stack(&[(&a, 1.0), (&b, 2.0)]).unwrap();
        assert!((d.get(0, 0).unwrap() - 1.4).abs() < 1e-6);
    }
}
