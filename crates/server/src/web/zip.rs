//! A zip archive written as it is sent: each file's bytes go out as they are read, CRC-32 and
//! sizes follow in a data descriptor, and the central directory comes at the end. Entries are
//! stored (not compressed) so a folder downloads at disk speed; Zip64 records throughout, so
//! files and archives over 4 GiB are fine. Memory: the central directory (about 100 bytes per
//! file), never file contents.

/// Records one entry of the central directory while the archive is written.
pub struct ZipWriter {
    offset: u64,
    central: Vec<u8>,
    entries: u64,
}

struct Dos {
    time: u16,
    date: u16,
}

fn dos_time(ms: i64) -> Dos {
    let secs = ms.div_euclid(1000).max(315_532_800); // DOS time starts in 1980
    let (y, m, d) = super::time::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    Dos {
        time: (((s / 3600) << 11) | ((s / 60 % 60) << 5) | ((s % 60) / 2)) as u16,
        date: ((((y - 1980).clamp(0, 127) as u32) << 9) | (m << 5) | d) as u16,
    }
}

const VERSION: u16 = 45; // Zip64
const FLAGS: u16 = 0x0808; // data descriptor follows; names are UTF-8

impl ZipWriter {
    pub fn new() -> ZipWriter {
        ZipWriter {
            offset: 0,
            central: Vec::new(),
            entries: 0,
        }
    }

    /// The local header of a file entry; its bytes follow, then [`ZipWriter::end_file`].
    pub fn start_file(&mut self, name: &str, modified_ms: i64) -> (Vec<u8>, FileEntry) {
        let dos = dos_time(modified_ms);
        let mut h = Vec::with_capacity(30 + name.len() + 20);
        h.extend(0x0403_4b50u32.to_le_bytes());
        h.extend(VERSION.to_le_bytes());
        h.extend(FLAGS.to_le_bytes());
        h.extend(0u16.to_le_bytes()); // stored
        h.extend(dos.time.to_le_bytes());
        h.extend(dos.date.to_le_bytes());
        h.extend(0u32.to_le_bytes()); // CRC: in the descriptor
        h.extend(u32::MAX.to_le_bytes()); // sizes: in the Zip64 descriptor
        h.extend(u32::MAX.to_le_bytes());
        h.extend((name.len() as u16).to_le_bytes());
        h.extend(20u16.to_le_bytes());
        h.extend(name.as_bytes());
        // Zip64 extra field: marks the descriptor's sizes as 8 bytes each.
        h.extend(0x0001u16.to_le_bytes());
        h.extend(16u16.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        let entry = FileEntry {
            name: name.to_string(),
            dos,
            header_offset: self.offset,
            crc: crc32fast::Hasher::new(),
            size: 0,
        };
        self.offset += h.len() as u64;
        (h, entry)
    }

    /// The data descriptor after a file's bytes; records its central directory entry.
    pub fn end_file(&mut self, e: FileEntry) -> Vec<u8> {
        let crc = e.crc.finalize();
        let mut d = Vec::with_capacity(24);
        d.extend(0x0807_4b50u32.to_le_bytes());
        d.extend(crc.to_le_bytes());
        d.extend(e.size.to_le_bytes());
        d.extend(e.size.to_le_bytes());
        self.offset += e.size + d.len() as u64;

        let c = &mut self.central;
        c.extend(0x0201_4b50u32.to_le_bytes());
        c.extend((VERSION | 3 << 8).to_le_bytes()); // made by: Unix
        c.extend(VERSION.to_le_bytes());
        c.extend(FLAGS.to_le_bytes());
        c.extend(0u16.to_le_bytes());
        c.extend(e.dos.time.to_le_bytes());
        c.extend(e.dos.date.to_le_bytes());
        c.extend(crc.to_le_bytes());
        c.extend(u32::MAX.to_le_bytes());
        c.extend(u32::MAX.to_le_bytes());
        c.extend((e.name.len() as u16).to_le_bytes());
        c.extend(28u16.to_le_bytes()); // extra
        c.extend(0u16.to_le_bytes()); // comment
        c.extend(0u16.to_le_bytes()); // disk
        c.extend(0u16.to_le_bytes()); // internal attributes
        c.extend((0o100644u32 << 16).to_le_bytes()); // regular file, rw-r--r--
        c.extend(u32::MAX.to_le_bytes()); // offset: in Zip64 extra
        c.extend(e.name.as_bytes());
        c.extend(0x0001u16.to_le_bytes());
        c.extend(24u16.to_le_bytes());
        c.extend(e.size.to_le_bytes());
        c.extend(e.size.to_le_bytes());
        c.extend(e.header_offset.to_le_bytes());
        self.entries += 1;
        d
    }

    /// The central directory and the end records.
    pub fn finish(self) -> Vec<u8> {
        let mut out = self.central;
        let cd_size = out.len() as u64;
        let cd_offset = self.offset;
        let z64_offset = cd_offset + cd_size;
        out.extend(0x0606_4b50u32.to_le_bytes());
        out.extend(44u64.to_le_bytes());
        out.extend((VERSION | 3 << 8).to_le_bytes());
        out.extend(VERSION.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(self.entries.to_le_bytes());
        out.extend(self.entries.to_le_bytes());
        out.extend(cd_size.to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend(0x0706_4b50u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(z64_offset.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(u16::MAX.to_le_bytes());
        out.extend(u16::MAX.to_le_bytes());
        out.extend(u32::MAX.to_le_bytes());
        out.extend(u32::MAX.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }
}

impl Default for ZipWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// A file entry being written.
pub struct FileEntry {
    name: String,
    dos: Dos,
    header_offset: u64,
    crc: crc32fast::Hasher,
    size: u64,
}

impl FileEntry {
    /// Accounts for bytes of the file as they are sent.
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.size += bytes.len() as u64;
    }
}
