//! Feeding a byte stream to a decoder in pieces, as TCP may deliver it: the codecs'
//! tests and fuzz targets check that what a decoder produces does not depend on how the
//! bytes were split.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Feeds `stream` to `codec` in pieces of the sizes in `splits` (cycled; sizes clamped to
/// at least 1), decoding after each piece. Items go to `out`; the first error stops it.
/// What is left undecoded stays in `buf` (for a `decode_eof` by the caller).
pub fn decode_in_pieces<D: Decoder>(
    codec: &mut D,
    buf: &mut BytesMut,
    stream: &[u8],
    splits: &[usize],
    out: &mut Vec<D::Item>,
) -> Result<(), D::Error> {
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = splits
            .get(i % splits.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .clamp(1, rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = codec.decode(buf)? {
            out.push(item);
        }
    }
    Ok(())
}
