//! SHA-256 whose running state can be kept and stored: both sides of the verified upload hash
//! as the bytes go by, and continue from a kept state when a file grows (an append hashes only
//! the new bytes). The state is 105 bytes ([`Sha256State::to_bytes`]), so it can be written to a
//! database and continued by another process. The block function is `sha2`'s (SHA-NI where the
//! CPU has it); this type only buffers and pads.

use sha2::digest::generic_array::GenericArray;

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The SHA-256 of a byte stream so far.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256State {
    h: [u32; 8],
    buf: [u8; 64],
    buffered: u8,
    len: u64,
}

impl Default for Sha256State {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sha256State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256State")
            .field("len", &self.len)
            .finish()
    }
}

/// Bytes of [`Sha256State::to_bytes`].
pub const STATE_BYTES: usize = 32 + 64 + 1 + 8;

impl Sha256State {
    /// The state before any byte.
    pub fn new() -> Self {
        Sha256State {
            h: H0,
            buf: [0; 64],
            buffered: 0,
            len: 0,
        }
    }

    /// How many bytes have been hashed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `data` to the hash.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buffered > 0 {
            let at = self.buffered as usize;
            let take = (64 - at).min(data.len());
            self.buf[at..at + take].copy_from_slice(&data[..take]);
            self.buffered += take as u8;
            data = &data[take..];
            if self.buffered < 64 {
                return;
            }
            let block = self.buf;
            sha2::compress256(&mut self.h, &[*GenericArray::from_slice(&block)]);
            self.buffered = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            sha2::compress256(
                &mut self.h,
                std::slice::from_ref(GenericArray::from_slice(b)),
            );
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len() as u8;
    }

    /// The digest of what was hashed (the state itself goes on unchanged).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = self.h;
        let mut block = [0u8; 64];
        let n = self.buffered as usize;
        block[..n].copy_from_slice(&self.buf[..n]);
        block[n] = 0x80;
        let bits = self.len.wrapping_mul(8).to_be_bytes();
        if n >= 56 {
            sha2::compress256(&mut h, &[*GenericArray::from_slice(&block)]);
            block = [0u8; 64];
        }
        block[56..].copy_from_slice(&bits);
        sha2::compress256(&mut h, &[*GenericArray::from_slice(&block)]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// The digest in lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.digest())
    }

    /// The state as bytes, to be continued by [`Sha256State::from_bytes`] (here or elsewhere).
    pub fn to_bytes(&self) -> [u8; STATE_BYTES] {
        let mut out = [0u8; STATE_BYTES];
        for (o, w) in out[..32].chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out[32..96].copy_from_slice(&self.buf);
        out[96] = self.buffered;
        out[97..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// A state written by [`Sha256State::to_bytes`]; `None` for bytes that cannot be one.
    pub fn from_bytes(b: &[u8]) -> Option<Sha256State> {
        if b.len() != STATE_BYTES || b[96] >= 64 {
            return None;
        }
        let len = u64::from_be_bytes(b[97..].try_into().ok()?);
        if len % 64 != u64::from(b[96]) {
            return None;
        }
        let mut h = [0u32; 8];
        for (w, c) in h.iter_mut().zip(b[..32].chunks_exact(4)) {
            *w = u32::from_be_bytes(c.try_into().ok()?);
        }
        let mut buf = [0u8; 64];
        buf.copy_from_slice(&b[32..96]);
        Some(Sha256State {
            h,
            buf,
            buffered: b[96],
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_same_digest_as_sha2_for_every_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000] {
            let want: [u8; 32] = Sha256::digest(&data[..len]).into();
            for split in [0, 1, 13, 64, len / 2, len] {
                let split = split.min(len);
                let mut s = Sha256State::new();
                s.update(&data[..split]);
                s.update(&data[split..len]);
                assert_eq!(s.digest(), want, "len {len} split {split}");
                assert_eq!(s.len(), len as u64);
            }
        }
        assert_eq!(
            Sha256State::new().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_stored_state_continues_elsewhere() {
        let mut a = Sha256State::new();
        a.update(b"the first part, ");
        let saved = a.to_bytes();
        let mut b = Sha256State::from_bytes(&saved).unwrap();
        assert_eq!(a, b);
        a.update(b"and the rest");
        b.update(b"and the rest");
        assert_eq!(a.hex(), b.hex());
        assert_eq!(
            a.hex(),
            hex::encode(Sha256::digest(b"the first part, and the rest"))
        );
        let mut bad = saved;
        bad[96] = 70;
        assert!(Sha256State::from_bytes(&bad).is_none());
        assert!(Sha256State::from_bytes(&saved[1..]).is_none());
        let mut inconsistent = saved;
        inconsistent[104] ^= 1;
        assert!(Sha256State::from_bytes(&inconsistent).is_none());
    }
}
