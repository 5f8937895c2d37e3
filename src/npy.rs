//! NumPy `.npy` files, for relevance maps handed on to Python.

/// Serialises `data` as a NumPy `.npy` (format version 1.0) file: dtype
/// `'<f4'`, C order, the given `shape` (empty = scalar).
///
/// The header is written byte-for-byte as `numpy.save` (checked against NumPy 2.4.6) writes
/// it, including its spare "growth" spaces after the dictionary and the
/// space padding plus `'\n'` that makes magic + version + length + header a
/// multiple of 64 bytes.
///
/// # Errors
///
/// If the shape's element count differs from `data.len()` (or overflows), or
/// the header outgrows version 1.0's 65535-byte limit.
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, String> {
    const MAGIC: &[u8] = b"\x93NUMPY\x01\x00";
    /// NumPy's `ARRAY_ALIGN`: the data starts on this boundary.
    const ALIGN: usize = 64;
    /// NumPy's `GROWTH_AXIS_MAX_DIGITS`: room to rewrite the first axis length.
    const GROWTH_DIGITS: usize = 21;

    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    if count != data.len() {
        return Err(format!(
            "shape {shape:?} holds {count} values but data has {}",
            data.len()
        ));
    }
    // Python tuple repr: (), (n,), (a, b, ...).
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_repr = match dims.as_slice() {
        [single] => format!("({single},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = dims.first() {
        header.push_str(&" ".repeat(GROWTH_DIGITS.saturating_sub(first.len())));
    }
    // Like NumPy, always pad by 1..=ALIGN spaces (a full ALIGN when already
    // aligned), then end with '\n'.
    let unpadded = MAGIC.len() + 2 + header.len() + 1;
    header.push_str(&" ".repeat(ALIGN - unpadded % ALIGN));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| {
        format!(
            "npy header of {} bytes exceeds version 1.0's limit",
            header.len()
        )
    })?;

    let mut bytes = Vec::with_capacity(MAGIC.len() + 2 + header.len() + 4 * data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in data {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2x3 test array.
    const NPY_DATA: [f32; 6] = [0.0, 1.5, -2.0, 3.25, 1e-3, 65504.0];

    #[test]
    fn npy_matches_numpy_save() {
        // Bytes of `numpy.save(f, np.array([[0, 1.5, -2], [3.25, 1e-3, 65504]],
        // dtype='<f4'))` with NumPy 2.4.6: 128-byte header, then 6 f32 values.
        let mut expected =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
                .to_vec();
        expected.extend_from_slice(&[b' '; 58]);
        expected.push(b'\n');
        expected.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, //
            0x00, 0x00, 0x50, 0x40, 0x6f, 0x12, 0x83, 0x3a, 0x00, 0xe0, 0x7f, 0x47,
        ]);
        assert_eq!(expected.len(), 152);
        let bytes = npy_f32(&[2, 3], &NPY_DATA).unwrap();
        assert_eq!(bytes, expected);

        // Header invariants, independent of the literal above.
        let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert_eq!(bytes.len(), 10 + header_len + 6 * 4);
    }

    #[test]
    fn npy_header_shapes_and_alignment() {
        let header = |shape: &[usize], n: usize| {
            let bytes = npy_f32(shape, &vec![0.0; n]).unwrap();
            let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            String::from_utf8(bytes[10..10 + len].to_vec()).unwrap()
        };
        assert!(
            header(&[], 1).starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
        );
        assert!(header(&[5], 5).contains("'shape': (5,), }"));
        assert!(header(&[0, 7], 0).contains("'shape': (0, 7), }"));
        // NumPy 2.4.6 writes this shape with a 182-byte header: the unpadded
        // prefix is exactly 128 bytes and NumPy still adds a full 64 spaces.
        let mut aligned = vec![1; 13];
        aligned.push(100);
        assert_eq!(header(&aligned, 100).len(), 182);
    }

    #[test]
    fn npy_rejects_bad_input() {
        let err = npy_f32(&[2, 3], &[0.0; 5]).unwrap_err();
        assert!(
            err.contains("[2, 3]") && err.contains('6') && err.contains('5'),
            "{err}"
        );
        assert!(npy_f32(&[usize::MAX, 2], &[]).is_err());
        assert!(npy_f32(&[1; 30_000], &[0.0]).is_err()); // Header over 65535 bytes.
    }
}
