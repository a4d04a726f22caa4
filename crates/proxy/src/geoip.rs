//! Where the client is, for the `geo` selector.
//!
//! The position comes from the `x-client-location` request header, honoured
//! only from clients in the listener's `location_from` networks (an edge
//! proxy or CDN that already knows the position): either `lat,lon` in
//! degrees or a zone name, which places the client at that zone's centre
//! (the mean position of its backends). A header from anyone else is
//! ignored, so a client cannot steer itself to a zone of its choosing.
//!
//! Otherwise, when the listener names a `geoip_db` (a MaxMind-format
//! `.mmdb` file, e.g. GeoLite2-City), the client's address is looked up in
//! it and the record's `location.latitude` / `location.longitude` place the
//! client. The database is read into memory once per configuration load
//! ([`GeoIpDb::open`]) and shared (`Arc`) by every request; a reload keeps
//! the loaded copy while the path, size and modification time are unchanged,
//! so only a new or replaced file is read again. A lookup walks at most 128
//! nodes of an in-memory tree and decodes two doubles: microseconds, no I/O,
//! fine on the request path.

use std::net::IpAddr;
use std::time::SystemTime;

use fulcrum_balance::selector::GeoPoint;
use fulcrum_balance::BackendSet;
use http::header::HeaderName;
use http::HeaderMap;

/// Request header carrying the client's position (`lat,lon` or a zone name).
pub static X_CLIENT_LOCATION: HeaderName = HeaderName::from_static("x-client-location");

/// The client's position from a trusted `x-client-location` header.
pub fn client_location(headers: &HeaderMap, trusted: bool, set: &BackendSet) -> Option<GeoPoint> {
    if !trusted {
        return None;
    }
    let value = headers.get(&X_CLIENT_LOCATION)?.to_str().ok()?.trim();
    GeoPoint::parse(value).or_else(|| zone_centre(set, value))
}

/// A MaxMind-format database held in memory, placing client addresses.
pub struct GeoIpDb {
    path: String,
    stamp: Option<(u64, SystemTime)>,
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIpDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIpDb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

/// The part of a City record the selector needs.
#[derive(serde::Deserialize)]
struct CityRecord {
    location: Option<RecordLocation>,
}

#[derive(serde::Deserialize)]
struct RecordLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// Size and modification time of `path`: what tells a replaced file apart.
fn stamp(path: &str) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl GeoIpDb {
    /// Reads the database at `path` into memory and checks its metadata.
    pub fn open(path: &str) -> Result<GeoIpDb, maxminddb::MaxMindDbError> {
        let stamp = stamp(path);
        let reader = maxminddb::Reader::open_readfile(path)?;
        Ok(GeoIpDb {
            path: path.to_owned(),
            stamp,
            reader,
        })
    }

    /// Whether this copy is still the file at `path` (same path, size and
    /// modification time), so a reload can keep it.
    pub fn is_current(&self, path: &str) -> bool {
        self.path == path && self.stamp.is_some() && self.stamp == stamp(path)
    }

    /// The file this copy was read from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The position recorded for `ip`, if the database has one.
    pub fn locate(&self, ip: IpAddr) -> Option<GeoPoint> {
        // An IPv4-mapped IPv6 peer (dual-stack socket) is looked up as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let record: CityRecord = self.reader.lookup(ip).ok()?.decode().ok()??;
        let location = record.location?;
        GeoPoint::new(location.latitude?, location.longitude?)
    }
}

/// The mean position of the backends in zone `zone` (O(backends); only for
/// clients that name a zone).
pub fn zone_centre(set: &BackendSet, zone: &str) -> Option<GeoPoint> {
    let (mut lat, mut lon, mut n) = (0.0, 0.0, 0.0);
    for b in set.backends() {
        let Some(loc) = &b.location else { continue };
        if loc.zone.as_deref() != Some(zone) {
            continue;
        }
        if let Some(p) = loc.point {
            lat += p.lat;
            lon += p.lon;
            n += 1.0;
        }
    }
    (n > 0.0).then(|| GeoPoint::new(lat / n, lon / n)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_balance::selector::Location;
    use fulcrum_balance::Backend;
    use http::HeaderValue;

    fn set() -> BackendSet {
        let mut b = Backend::new("a:1", 1);
        b.location = Some(Location {
            zone: Some("eu-west".into()),
            region: None,
            point: GeoPoint::new(53.0, -6.0),
        });
        BackendSet::new(vec![b])
    }

    #[test]
    fn client_location_reads_coordinates_or_a_zone_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert(&X_CLIENT_LOCATION, HeaderValue::from_static("40.7, -74.0"));
        assert_eq!(
            client_location(&h, true, &set()),
            GeoPoint::new(40.7, -74.0)
        );
        assert_eq!(client_location(&h, false, &set()), None);
        h.insert(&X_CLIENT_LOCATION, HeaderValue::from_static("eu-west"));
        assert_eq!(client_location(&h, true, &set()), GeoPoint::new(53.0, -6.0));
        h.insert(&X_CLIENT_LOCATION, HeaderValue::from_static("mars"));
        assert_eq!(client_location(&h, true, &set()), None);
    }

    #[test]
    fn geoip_db_places_addresses_from_a_written_database() {
        let mut w = fulcrum_testbed::mmdb::MmdbWriter::new();
        w.insert_v4("127.0.2.0".parse().unwrap(), 24, "Dublin", 53.35, -6.26);
        w.insert_v4("10.0.0.0".parse().unwrap(), 8, "Ashburn", 38.9, -77.4);
        let dir = std::env::temp_dir().join(format!("fulcrum-geoip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("city.mmdb");
        std::fs::write(&path, w.to_bytes()).unwrap();
        let path = path.to_str().unwrap();
        let db = GeoIpDb::open(path).unwrap();
        assert!(db.is_current(path));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(db.locate(ip("127.0.2.9")), GeoPoint::new(53.35, -6.26));
        assert_eq!(db.locate(ip("::ffff:10.1.2.3")), GeoPoint::new(38.9, -77.4));
        assert_eq!(db.locate(ip("127.0.3.1")), None);
        assert_eq!(db.locate(ip("2001:db8::1")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn geoip_db_is_shared_and_kept_across_reloads_while_the_file_is_unchanged() {
        use crate::state::Runtime;
        use fulcrum_config::{Command, Config};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("fulcrum-geoip-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("city.mmdb");
        let mut w = fulcrum_testbed::mmdb::MmdbWriter::new();
        w.insert_v4("127.0.2.0".parse().unwrap(), 24, "Dublin", 53.35, -6.26);
        std::fs::write(&path, w.to_bytes()).unwrap();
        let config = |weight: u32| -> Config {
            let listener = |name: &str| {
                format!(
                    "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\ngeoip_db = {:?}\n",
                    path.to_str().unwrap()
                )
            };
            let text = format!(
                "{}{}[cluster.app]\nalgorithm = \"geo\"\nbackends = [{{ address = \"127.0.0.1:9\", weight = {weight} }}]\n",
                listener("a"),
                listener("b")
            );
            fulcrum_config::parse(&text, None).unwrap()
        };
        let db = |runtime: &Runtime, name: &str| {
            Arc::clone(runtime.snapshot().listeners[name].geoip.as_ref().unwrap())
        };
        let runtime = Runtime::new(config(1));
        let first = db(&runtime, "a");
        assert!(Arc::ptr_eq(&first, &db(&runtime, "b")), "one copy per file");
        assert_eq!(
            first.locate("127.0.2.1".parse().unwrap()),
            GeoPoint::new(53.35, -6.26)
        );
        runtime
            .apply([Command::Replace(Box::new(config(2)))])
            .unwrap();
        assert!(Arc::ptr_eq(&first, &db(&runtime, "a")), "kept by a reload");
        // A replaced file (new size) is read again.
        w.insert_v4("127.0.3.0".parse().unwrap(), 24, "Munich", 48.14, 11.58);
        std::fs::write(&path, w.to_bytes()).unwrap();
        runtime
            .apply([Command::Replace(Box::new(config(3)))])
            .unwrap();
        let second = db(&runtime, "a");
        assert!(!Arc::ptr_eq(&first, &second), "read again after a change");
        assert_eq!(
            second.locate("127.0.3.1".parse().unwrap()),
            GeoPoint::new(48.14, 11.58)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
