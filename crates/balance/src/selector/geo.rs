//! Geo: the nearest zone with headroom, spilling over by distance.
//!
//! Backends carry a [`Location`] (zone, region, coordinates); the request
//! carries the client's position ([`PickContext::client`]). Zones are
//! visited nearest first, by great-circle distance from the client to the
//! zone's centre (the mean of its backends' coordinates):
//!
//! * a zone is **usable** when it has a candidate backend (healthy,
//!   enabled, not already tried) with **headroom**: fewer than
//!   [`SelectorConfig::geo_max_in_flight`] requests in flight;
//! * the first usable zone wins, and inside it the pick is peak-EWMA's
//!   power of two choices ([`PeakEwma::cost`]) among the backends with
//!   headroom;
//! * when no zone has headroom the nearest zone with any candidate takes the
//!   request (going farther would add distance without finding a less
//!   loaded backend);
//! * a client without a known position, or backends without coordinates,
//!   are treated as equidistant: zones are tried in the order they appear.
//!
//! Spill-over therefore happens exactly when the local zone is down or
//! saturated, and traffic returns as soon as a local backend is below the
//! threshold again — there is no state to reset. This is Google Cloud's
//! "waterfall by region" and Envoy's zone-aware routing reduced to a local,
//! per-request rule; the in-flight threshold stands in for Envoy's
//! capacity ratio because the proxy measures it directly.
//!
//! Cost per pick: O(zones²) to order at most 64 zones without allocating,
//! plus O(1) expected draws inside the zone.

use std::sync::Arc;

use super::{write_header, PeakEwma, PickContext, Selector, SelectorConfig};
use crate::backend::{BackendId, BackendSet};

/// A point on Earth in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoPoint {
    /// Latitude, −90..=90.
    pub lat: f64,
    /// Longitude, −180..=180.
    pub lon: f64,
}

impl GeoPoint {
    /// A point, or `None` when the coordinates are out of range or not finite.
    pub fn new(lat: f64, lon: f64) -> Option<GeoPoint> {
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
            .then_some(GeoPoint { lat, lon })
    }

    /// Parses `"lat,lon"` (spaces allowed).
    pub fn parse(s: &str) -> Option<GeoPoint> {
        let (a, b) = s.split_once(',')?;
        GeoPoint::new(a.trim().parse().ok()?, b.trim().parse().ok()?)
    }

    /// Great-circle distance in kilometres (haversine, mean Earth radius).
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = la2 - la1;
        let dlon = (other.lon - self.lon).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

// Coordinates are validated finite, so equality is reflexive.
impl Eq for GeoPoint {}

/// Where a backend runs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Location {
    /// Zone name (`eu-west-1a`); backends sharing it form a zone.
    pub zone: Option<Arc<str>>,
    /// Region name (`eu-west`), informational.
    pub region: Option<Arc<str>>,
    /// Coordinates.
    pub point: Option<GeoPoint>,
}

/// Most zones ordered by distance; further zones are visited in file order
/// after them.
const MAX_ORDERED_ZONES: usize = 64;

#[derive(Debug)]
struct Zone {
    name: Arc<str>,
    centre: Option<GeoPoint>,
    members: Vec<BackendId>,
}

/// Nearest zone with headroom, peak-EWMA inside it.
#[derive(Debug)]
pub struct Geo {
    zones: Vec<Zone>,
    max_in_flight: u32,
    ewma: PeakEwma,
}

impl Geo {
    /// Groups `set`'s backends into zones (backends without a zone share
    /// the unnamed zone) and computes each zone's centre.
    pub fn new(set: &BackendSet, config: &SelectorConfig) -> Self {
        let mut zones: Vec<Zone> = Vec::new();
        for (i, b) in set.backends().iter().enumerate() {
            let name: Arc<str> = b
                .location
                .as_ref()
                .and_then(|l| l.zone.clone())
                .unwrap_or_else(|| Arc::from(""));
            let id = BackendId(i as u32);
            match zones.iter_mut().find(|z| z.name == name) {
                Some(z) => z.members.push(id),
                None => zones.push(Zone {
                    name,
                    centre: None,
                    members: vec![id],
                }),
            }
        }
        for z in &mut zones {
            let points: Vec<GeoPoint> = z
                .members
                .iter()
                .filter_map(|&id| set.get(id).location.as_ref()?.point)
                .collect();
            if !points.is_empty() {
                let n = points.len() as f64;
                z.centre = GeoPoint::new(
                    points.iter().map(|p| p.lat).sum::<f64>() / n,
                    points.iter().map(|p| p.lon).sum::<f64>() / n,
                );
            }
        }
        Self {
            zones,
            max_in_flight: config.geo_max_in_flight.max(1),
            ewma: PeakEwma::new(set, config),
        }
    }

    /// The centre of zone `name`, if it has coordinates: lets a client that
    /// names its zone (`x-client-location: eu-west`) be placed.
    pub fn zone_centre(&self, name: &str) -> Option<GeoPoint> {
        self.zones.iter().find(|z| &*z.name == name)?.centre
    }

    /// The zone of backend `id` ("" when it has none).
    pub fn zone_of(&self, id: BackendId) -> &str {
        self.zones
            .iter()
            .find(|z| z.members.contains(&id))
            .map_or("", |z| &z.name)
    }

    fn distance(&self, zone: &Zone, client: Option<GeoPoint>) -> f64 {
        match (client, zone.centre) {
            (Some(c), Some(z)) => c.distance_km(z),
            (None, _) => 0.0,
            (Some(_), None) => f64::INFINITY,
        }
    }

    /// Zone indexes nearest first, without allocating: calls `visit` until
    /// it returns `Some`.
    fn nearest_first<R>(
        &self,
        client: Option<GeoPoint>,
        mut visit: impl FnMut(usize) -> Option<R>,
    ) -> Option<R> {
        let ordered = self.zones.len().min(MAX_ORDERED_ZONES);
        let mut seen: u64 = 0;
        for _ in 0..ordered {
            let mut best: Option<(usize, f64)> = None;
            for (i, z) in self.zones[..ordered].iter().enumerate() {
                if seen & (1 << i) != 0 {
                    continue;
                }
                let d = self.distance(z, client);
                if best.map_or(true, |(_, bd)| d < bd) {
                    best = Some((i, d));
                }
            }
            let (i, _) = best?;
            seen |= 1 << i;
            if let Some(r) = visit(i) {
                return Some(r);
            }
        }
        (ordered..self.zones.len()).find_map(visit)
    }

    fn has_headroom(&self, set: &BackendSet, id: BackendId) -> bool {
        set.get(id).state.load.in_flight() < self.max_in_flight
    }

    /// Peak-EWMA P2C among the zone's candidates (with headroom when
    /// `headroom` is set).
    fn pick_in_zone(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        zone: &Zone,
        headroom: bool,
    ) -> Option<BackendId> {
        let ok = |ctx: &PickContext<'_>, id: BackendId| {
            ctx.is_candidate(set, id) && (!headroom || self.has_headroom(set, id))
        };
        let n = zone.members.len();
        let draw = |ctx: &mut PickContext<'_>, other: Option<BackendId>| {
            for _ in 0..4 {
                let id = zone.members[ctx.rng.usize(0..n)];
                if Some(id) != other && ok(ctx, id) {
                    return Some(id);
                }
            }
            let start = ctx.rng.usize(0..n);
            (0..n)
                .map(|k| zone.members[(start + k) % n])
                .find(|&id| Some(id) != other && ok(ctx, id))
        };
        let a = draw(ctx, None)?;
        match draw(ctx, Some(a)) {
            Some(b) if self.ewma.cost(set, b, ctx.now) < self.ewma.cost(set, a, ctx.now) => Some(b),
            _ => Some(a),
        }
    }
}

impl Selector for Geo {
    fn name(&self) -> &'static str {
        "geo"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let client = ctx.client;
        self.nearest_first(client, |z| {
            self.pick_in_zone(set, ctx, &self.zones[z], true)
        })
        .or_else(|| {
            self.nearest_first(client, |z| {
                self.pick_in_zone(set, ctx, &self.zones[z], false)
            })
        })
    }

    fn explain(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        out: &mut String,
    ) -> Option<BackendId> {
        use std::fmt::Write as _;
        let picked = self.pick(set, ctx);
        write_header(out, self.name(), set, picked);
        if let Some(id) = picked {
            let _ = write!(out, "; zone={}", self.zone_of(id));
        }
        match ctx.client {
            Some(c) => {
                let _ = write!(out, "; client={:.2},{:.2}", c.lat, c.lon);
            }
            None => out.push_str("; client=unknown"),
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendSet};
    use crate::SECOND;

    const DUBLIN: GeoPoint = GeoPoint {
        lat: 53.35,
        lon: -6.26,
    };
    const FRANKFURT: GeoPoint = GeoPoint {
        lat: 50.11,
        lon: 8.68,
    };
    const VIRGINIA: GeoPoint = GeoPoint {
        lat: 38.9,
        lon: -77.4,
    };

    /// Two backends per zone: eu-west (Dublin), eu-central (Frankfurt),
    /// us-east (Virginia).
    fn zoned_set() -> BackendSet {
        let mut backends = Vec::new();
        for (zone, point) in [
            ("eu-west", DUBLIN),
            ("eu-central", FRANKFURT),
            ("us-east", VIRGINIA),
        ] {
            for i in 0..2 {
                let mut b = Backend::new(format!("{zone}-{i}"), 1);
                b.location = Some(Location {
                    zone: Some(Arc::from(zone)),
                    region: None,
                    point: Some(point),
                });
                backends.push(b);
            }
        }
        BackendSet::new(backends)
    }

    fn config(max_in_flight: u32) -> SelectorConfig {
        SelectorConfig {
            geo_max_in_flight: max_in_flight,
            ..SelectorConfig::default()
        }
    }

    fn zone_picks(set: &BackendSet, sel: &Geo, client: Option<GeoPoint>, n: usize) -> Vec<String> {
        let mut rng = fastrand::Rng::with_seed(3);
        (0..n)
            .map(|_| {
                let mut ctx = PickContext::new(SECOND, &mut rng);
                ctx.client = client;
                sel.zone_of(sel.pick(set, &mut ctx).unwrap()).to_owned()
            })
            .collect()
    }

    #[test]
    fn geo_distance_is_great_circle() {
        let d = DUBLIN.distance_km(FRANKFURT);
        assert!((1080.0..1110.0).contains(&d), "{d}");
        assert_eq!(GeoPoint::parse("53.35, -6.26"), Some(DUBLIN));
        assert_eq!(GeoPoint::parse("91,0"), None);
    }

    #[test]
    fn geo_picks_the_nearest_zone() {
        let set = zoned_set();
        let sel = Geo::new(&set, &config(10));
        let near_paris = GeoPoint::new(48.85, 2.35);
        for (client, zone) in [
            (Some(DUBLIN), "eu-west"),
            (near_paris, "eu-central"),
            (Some(VIRGINIA), "us-east"),
        ] {
            assert!(
                zone_picks(&set, &sel, client, 50).iter().all(|z| z == zone),
                "{zone}"
            );
        }
    }

    #[test]
    fn geo_spills_to_the_next_nearest_zone_when_local_is_full_and_returns() {
        let set = zoned_set();
        let sel = Geo::new(&set, &config(2));
        let busy: Vec<_> = (0..2)
            .flat_map(|i| (0..2).map(move |_| i))
            .map(|i| set.get(BackendId(i)).state.load.start())
            .collect();
        // Dublin's zone is at its threshold: Frankfurt is next, not Virginia.
        assert!(zone_picks(&set, &sel, Some(DUBLIN), 50)
            .iter()
            .all(|z| z == "eu-central"));
        drop(busy);
        assert!(zone_picks(&set, &sel, Some(DUBLIN), 50)
            .iter()
            .all(|z| z == "eu-west"));
    }

    #[test]
    fn geo_fails_over_when_the_local_zone_is_down() {
        let set = zoned_set();
        set.get(BackendId(0)).state.set_healthy(false);
        set.get(BackendId(1)).state.set_healthy(false);
        let sel = Geo::new(&set, &config(10));
        assert!(zone_picks(&set, &sel, Some(DUBLIN), 50)
            .iter()
            .all(|z| z == "eu-central"));
    }

    #[test]
    fn geo_stays_local_when_every_zone_is_saturated() {
        let set = zoned_set();
        let sel = Geo::new(&set, &config(1));
        let _busy: Vec<_> = (0..6)
            .map(|i| set.get(BackendId(i)).state.load.start())
            .collect();
        assert!(zone_picks(&set, &sel, Some(VIRGINIA), 20)
            .iter()
            .all(|z| z == "us-east"));
    }

    #[test]
    fn geo_without_client_location_uses_every_zone_in_order() {
        let set = zoned_set();
        let sel = Geo::new(&set, &config(10));
        assert!(zone_picks(&set, &sel, None, 20)
            .iter()
            .all(|z| z == "eu-west"));
        assert_eq!(sel.zone_centre("us-east"), Some(VIRGINIA));
    }
}
