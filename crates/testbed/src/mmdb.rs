//! A minimal MaxMind DB (`.mmdb`) writer, so tests can place clients by
//! address without shipping a real GeoIP database.
//!
//! It writes what a City database's reader needs and nothing more: an IPv6
//! search tree (IPv4 networks live under `::/96`, as in GeoLite2) with
//! 24-bit records, the 16-byte separator, a data section of maps with a
//! `location.latitude` / `location.longitude` pair (and `city.names.en`),
//! and the metadata map after the `\xAB\xCD\xEFMaxMind.com` marker.
//! Written from the format specification
//! (<https://maxmind.github.io/MaxMind-DB/>). Networks must not overlap.

use std::net::Ipv4Addr;

/// A network placed at a point.
#[derive(Clone, Debug)]
struct Entry {
    bits: u128,
    prefix: u8,
    record: Vec<u8>,
}

/// Builds a small MaxMind-format City database in memory.
#[derive(Clone, Debug, Default)]
pub struct MmdbWriter {
    entries: Vec<Entry>,
}

/// One child of a search-tree node while building.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

impl MmdbWriter {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places the IPv4 network `addr/prefix` at `lat,lon`, naming it `city`.
    pub fn insert_v4(&mut self, addr: Ipv4Addr, prefix: u8, city: &str, lat: f64, lon: f64) {
        assert!(prefix <= 32, "an IPv4 prefix is at most 32 bits");
        let mut record = Vec::new();
        map_header(&mut record, 2);
        string(&mut record, "city");
        map_header(&mut record, 1);
        string(&mut record, "names");
        map_header(&mut record, 1);
        string(&mut record, "en");
        string(&mut record, city);
        string(&mut record, "location");
        map_header(&mut record, 2);
        string(&mut record, "latitude");
        double(&mut record, lat);
        string(&mut record, "longitude");
        double(&mut record, lon);
        self.entries.push(Entry {
            bits: u128::from(u32::from(addr)),
            prefix: 96 + prefix,
            record,
        });
    }

    /// The database file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // The search tree: node 0 is the root; each node has two children.
        let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty; 2]];
        for (d, e) in self.entries.iter().enumerate() {
            let mut node = 0;
            for i in 0..e.prefix {
                let bit = ((e.bits >> (127 - i)) & 1) as usize;
                if i + 1 == e.prefix {
                    nodes[node][bit] = Child::Data(d);
                    break;
                }
                node = match nodes[node][bit] {
                    Child::Node(n) => n,
                    Child::Empty => {
                        nodes.push([Child::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Child::Node(n);
                        n
                    }
                    Child::Data(_) => panic!("overlapping networks"),
                };
            }
        }
        let node_count = nodes.len();
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for e in &self.entries {
            offsets.push(data.len());
            data.extend_from_slice(&e.record);
        }
        let mut out = Vec::new();
        for node in &nodes {
            for child in node {
                let value = match *child {
                    Child::Empty => node_count,
                    Child::Node(n) => n,
                    Child::Data(d) => node_count + 16 + offsets[d],
                };
                assert!(value < 1 << 24, "database too large for 24-bit records");
                out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
            }
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        map_header(&mut out, 9);
        string(&mut out, "binary_format_major_version");
        uint(&mut out, 5, 2);
        string(&mut out, "binary_format_minor_version");
        uint(&mut out, 5, 0);
        string(&mut out, "build_epoch");
        uint(&mut out, 9, 1_700_000_000);
        string(&mut out, "database_type");
        string(&mut out, "Fulcrum-Test-City");
        string(&mut out, "description");
        map_header(&mut out, 1);
        string(&mut out, "en");
        string(&mut out, "test database written by fulcrum-testbed");
        string(&mut out, "ip_version");
        uint(&mut out, 5, 6);
        string(&mut out, "languages");
        control(&mut out, 11, 1);
        string(&mut out, "en");
        string(&mut out, "node_count");
        uint(&mut out, 6, node_count as u64);
        string(&mut out, "record_size");
        uint(&mut out, 5, 24);
        out
    }
}

/// A control byte (and extended-type byte) for `kind` with payload `size`.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29 + 256, "only payloads under 285 bytes are written");
    let short = size.min(29) as u8;
    if kind <= 7 {
        out.push(kind << 5 | short);
    } else {
        out.push(short);
        out.push(kind - 7);
    }
    if size >= 29 {
        out.push((size - 29) as u8);
    }
}

fn map_header(out: &mut Vec<u8>, entries: usize) {
    control(out, 7, entries);
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn double(out: &mut Vec<u8>, v: f64) {
    control(out, 3, 8);
    out.extend_from_slice(&v.to_be_bytes());
}

/// An unsigned integer of type `kind` (5 = uint16, 6 = uint32, 9 = uint64)
/// in its shortest big-endian form.
fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}
