//! Where the client is, for the `geo` selector.
//!
//! The position comes from the `x-client-location` request header, honoured
//! only from clients in the listener's `location_from` networks (an edge
//! proxy or CDN that already knows the position): either `lat,lon` in
//! degrees or a zone name, which places the client at that zone's centre
//! (the mean position of its backends). A header from anyone else is
//! ignored, so a client cannot steer itself to a zone of its choosing.
//!
//! The listener key `geoip_db` (a MaxMind-format `.mmdb` file) is accepted
//! by the configuration; looking addresses up in it is not built yet, so
//! until then the trusted header is the source of positions.

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
}
