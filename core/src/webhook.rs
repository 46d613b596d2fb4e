//! Webhook signing (Standard Webhooks), the retry schedule, and the SSRF
//! guard's address rules. Sending is the worker's; this module does no I/O.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook secret is not a whsec_ base64 string")]
    BadSecret,
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`,
/// keyed by the base64 part of the `whsec_` secret.
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| WebhookError::BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| WebhookError::BadSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` value for several secrets (the current one, and
/// the previous one after a rotation): their signatures, space-separated,
/// any of which verifies.
pub fn sign_all(
    secrets: &[String],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    let signatures: Result<Vec<String>, WebhookError> = secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect();
    Ok(signatures?.join(" "))
}

/// The most retries a schedule may list, whatever `task_max_attempts`.
/// Each send of a delivery is a claim of its task, so `Config::validate`
/// also requires the schedule's sends (retries + 1) to fit in
/// `task_max_attempts` (25 by default: 20 retries leave a few claims for
/// restarts of workers that held it).
pub const MAX_RETRIES: usize = 20;

/// Parses `5s,1m,5m,30m,2h`: the delays before each retry.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if out.len() == MAX_RETRIES {
            return Err(format!("lists more than {MAX_RETRIES} retries"));
        }
        let (num, unit) = part.split_at(
            part.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len()),
        );
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{part:?} is not a delay like 5s, 1m, 2h or 1d"))?;
        let unit = match unit {
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("{part:?} has an unknown unit; use s, m, h or d")),
        };
        // It is added to timestamps, in the database as here.
        let secs = n
            .checked_mul(unit)
            .filter(|&s| s <= crate::config::MAX_DURATION_SECS)
            .ok_or_else(|| format!("{part:?} is longer than 100 years"))?;
        out.push(Duration::from_secs(secs));
    }
    Ok(out)
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses `10.0.0.0/8, 127.0.0.1/32, ::1/128` (a bare address is a /32 or /128).
pub fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (addr, prefix) = part.split_once('/').unwrap_or((part, ""));
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{part:?} is not a CIDR like 10.0.0.0/8"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = if prefix.is_empty() {
                max
            } else {
                prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{part:?} has an invalid prefix length"))?
            };
            // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4
            // network it carries (10.0.0.0/8), as the addresses it is
            // matched against are; one wider than the mapped range would
            // allow the whole IPv4 Internet, private networks included.
            match canonical(addr) {
                IpAddr::V4(v4) if addr.is_ipv6() => match prefix.checked_sub(96) {
                    Some(prefix) => Ok(Cidr {
                        addr: IpAddr::V4(v4),
                        prefix,
                    }),
                    None => Err(format!(
                        "{part:?} spans more than the IPv4-mapped range: \
                         write the IPv4 network instead (like 10.0.0.0/8)"
                    )),
                },
                addr => Ok(Cidr { addr, prefix }),
            }
        })
        .collect()
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is refused as a webhook target by default, if it is:
/// anything that is not a public unicast address. IPv6 forms that carry an
/// IPv4 address (mapped, 6to4, NAT64) are judged by that address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xC0) == 64) {
                // 100.64.0.0/10 is carrier-grade NAT space.
                Some("private")
            } else if v4.is_link_local() {
                // 169.254.169.254 is the cloud metadata service.
                Some("link-local or metadata")
            } else if v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                // 192.0.0.0/24: IETF protocol assignments; 198.18.0.0/15: benchmarking.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xFE) == 18)
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("reserved")
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                // fc00::/7, which also holds AWS's fd00:ec2::254 metadata address.
                Some("private")
            } else if (seg[0] & 0xffc0) == 0xfe80 || (seg[0] & 0xffc0) == 0xfec0 {
                // fe80::/10 link-local; fec0::/10 the old site-local.
                Some("link-local or metadata")
            } else if let Some(v4) = carried_ipv4(seg) {
                forbidden_reason(IpAddr::V4(v4))
            } else if seg[..3] == [0x64, 0xff9b, 1] {
                // 64:ff9b:1::/48, the local-use NAT64 prefix (RFC 8215): a
                // translator of this network, to whatever IPv4 it reaches.
                Some("private")
            } else if seg[..6] == [0; 6] {
                // ::a.b.c.d, the deprecated IPv4-compatible form.
                Some("reserved")
            } else if (seg[0] == 0x2001 && matches!(seg[1], 0 | 0x0db8))
                || seg[..4] == [0x100, 0, 0, 0]
            {
                // Teredo (the tunnel hides its IPv4 ends), documentation, discard.
                Some("reserved")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address inside a 6to4 (2002::/16) or NAT64 (64:ff9b::/96) address.
fn carried_ipv4(seg: [u16; 8]) -> Option<std::net::Ipv4Addr> {
    let v4 = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if seg[0] == 0x2002 {
        Some(v4(seg[1], seg[2]))
    } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(v4(seg[6], seg[7]))
    } else {
        None
    }
}

/// The reason `ip` may not be reached, unless the allow-list covers it.
pub fn refused(ip: IpAddr, allow: &[Cidr]) -> Option<&'static str> {
    let reason = forbidden_reason(ip)?;
    if allow.iter().any(|c| c.contains(ip)) {
        None
    } else {
        Some(reason)
    }
}

/// The delay before retry number `retry` (1-based), jittered by ±10%, or
/// `None` when the schedule is spent. `retry_after` (from the receiver)
/// lengthens it, up to the longest delay of the schedule.
pub fn next_delay(
    schedule: &[Duration],
    retry: usize,
    retry_after: Option<Duration>,
    unit_jitter: f64,
) -> Option<Duration> {
    let base = *schedule.get(retry.checked_sub(1)?)?;
    let jittered = base.mul_f64(1.0 + 0.2 * (unit_jitter.clamp(0.0, 1.0) - 0.5));
    let longest = schedule.iter().max().copied().unwrap_or_default();
    Some(match retry_after {
        Some(after) if after > jittered => after.min(longest.max(jittered)),
        _ => jittered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_known_answer() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn schedules() {
        let s = parse_schedule("5s, 1m,2h,1d").unwrap();
        assert_eq!(s, [5, 60, 7200, 86400].map(Duration::from_secs).to_vec());
        assert!(parse_schedule("5x").is_err());
        assert_eq!(parse_schedule(&vec!["1s"; 20].join(",")).unwrap().len(), 20);
        assert!(parse_schedule(&vec!["1s"; 21].join(",")).is_err());
        assert!(parse_schedule("m").is_err());
        // Longer than a timestamp can take (or than u64 seconds).
        assert_eq!(
            parse_schedule("36500d").unwrap(),
            [Duration::from_secs(36500 * 86400)]
        );
        for long in ["36501d", "999999999999999d", "99999999999999999999s"] {
            assert!(parse_schedule(long).is_err(), "{long}");
        }
        assert_eq!(next_delay(&s, 1, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&s, 5, None, 0.5), None);
        assert_eq!(next_delay(&s, 0, None, 0.5), None);
        let d = next_delay(&s, 2, None, 1.0).unwrap();
        assert_eq!(d, Duration::from_secs(66));
        let d = next_delay(&s, 1, Some(Duration::from_secs(120)), 0.5).unwrap();
        assert_eq!(d, Duration::from_secs(120));
        let d = next_delay(&s, 1, Some(Duration::from_secs(10 * 86400)), 0.5).unwrap();
        assert_eq!(d, Duration::from_secs(86400));
    }

    #[test]
    fn ssrf_rules() {
        let allow = parse_cidrs("127.0.0.1/32, 10.1.0.0/16").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(refused(ip("127.0.0.1"), &[]), Some("loopback"));
        assert_eq!(refused(ip("127.0.0.1"), &allow), None);
        assert_eq!(refused(ip("127.0.0.2"), &allow), Some("loopback"));
        assert_eq!(refused(ip("10.1.2.3"), &allow), None);
        assert_eq!(refused(ip("10.2.2.3"), &allow), Some("private"));
        assert_eq!(refused(ip("192.168.1.1"), &[]), Some("private"));
        assert_eq!(
            refused(ip("169.254.169.254"), &[]),
            Some("link-local or metadata")
        );
        assert_eq!(refused(ip("::ffff:127.0.0.1"), &[]), Some("loopback"));
        assert_eq!(refused(ip("::1"), &[]), Some("loopback"));
        assert_eq!(refused(ip("fd00::1"), &[]), Some("private"));
        assert_eq!(refused(ip("0.0.0.0"), &[]), Some("reserved"));
        assert_eq!(refused(ip("93.184.216.34"), &[]), None);
        // Every IPv6 spelling of a private or loopback IPv4 address.
        for (addr, reason) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:169.254.169.254", "link-local or metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "reserved"),
            ("::a00:1", "reserved"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local or metadata"),
            ("64:ff9b::10.1.2.3", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b:1::a00:1", "private"),
            ("64:ff9b:1:ffff::5db8:d822", "private"),
            ("fc00::1", "private"),
            ("fdff:ffff::1", "private"),
            ("fd00:ec2::254", "private"),
            ("fe80::1", "link-local or metadata"),
            ("febf::1", "link-local or metadata"),
            ("fec0::1", "link-local or metadata"),
            ("ff02::1", "reserved"),
            ("::", "reserved"),
            ("2001:db8::1", "reserved"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),
            ("100::1", "reserved"),
            ("198.18.0.1", "reserved"),
            ("192.0.0.170", "reserved"),
            ("100.64.0.1", "private"),
            ("255.255.255.255", "reserved"),
        ] {
            assert_eq!(refused(ip(addr), &[]), Some(reason), "{addr}");
        }
        // Public addresses, also in IPv6 wrappers, stay reachable.
        for addr in [
            "2002:5db8:d822::1",
            "64:ff9b::93.184.216.34",
            "::ffff:93.184.216.34",
        ] {
            assert_eq!(refused(ip(addr), &[]), None, "{addr}");
        }
        // The allow-list matches a mapped address by the IPv4 address it carries.
        assert_eq!(refused(ip("::ffff:127.0.0.1"), &allow), None);
        assert_eq!(refused(ip("2606:4700::1"), &[]), None);
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("nope").is_err());
        // An allowed network written in its IPv4-mapped form is that IPv4
        // network, not every IPv4 address.
        for mapped in ["::ffff:10.1.2.3", "::ffff:10.1.0.0/112"] {
            let allow = parse_cidrs(mapped).unwrap();
            assert_eq!(refused(ip("10.1.2.3"), &allow), None, "{mapped}");
            assert_eq!(refused(ip("::ffff:10.1.2.3"), &allow), None, "{mapped}");
            for other in ["127.0.0.1", "10.9.9.9", "169.254.169.254"] {
                assert!(refused(ip(other), &allow).is_some(), "{mapped}: {other}");
            }
        }
        assert_eq!(
            parse_cidrs("::ffff:10.0.0.0/104").unwrap(),
            parse_cidrs("10.0.0.0/8").unwrap()
        );
        assert!(parse_cidrs("::ffff:0.0.0.0/90").is_err());
    }
}
