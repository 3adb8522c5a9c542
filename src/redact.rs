//! What clients may see of an error text.
//!
//! Failure reasons are stored whole (operators read them with `vidpipe
//! queue` and in the logs), but the API shows uploaders a redacted copy:
//! ffmpeg, sqlx and the S3 client write absolute paths, endpoints, host
//! names and heap addresses into their messages, and each of those tells an
//! attacker something about the server.

/// Longest error text shown to clients.
const MAX_CLIENT_TEXT: usize = 500;

/// `text` without absolute paths, URLs, IP addresses, this host's name or
/// heap addresses, and at most [`MAX_CLIENT_TEXT`] characters long.
pub fn for_clients(text: &str) -> String {
    let host = hostname::get().ok().map(|h| h.to_string_lossy().into_owned()).filter(|h| !h.is_empty());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let token_end = rest.find(is_separator).unwrap_or(rest.len());
        let (token, after) = if token_end == 0 {
            let sep_len = rest.chars().next().map_or(1, char::len_utf8);
            rest.split_at(sep_len)
        } else {
            rest.split_at(token_end)
        };
        if token_end == 0 {
            out.push_str(token);
        } else {
            out.push_str(&redact_token(token, host.as_deref()));
        }
        rest = after;
    }
    if out.chars().count() > MAX_CLIENT_TEXT {
        out = out.chars().take(MAX_CLIENT_TEXT).collect::<String>() + "…";
    }
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '(' | ')' | '[' | ']' | '<' | '>' | ',' | ';' | '|' | '=')
}

fn redact_token(token: &str, host: Option<&str>) -> String {
    let trimmed = token.trim_end_matches([':', '.']);
    let suffix = &token[trimmed.len()..];
    let replaced = if trimmed.contains("://") {
        "<url>".to_string()
    } else if trimmed.starts_with('/') && trimmed.len() > 1 {
        "<path>".to_string()
    } else if is_hex_address(trimmed) || is_ip_address(trimmed) {
        "<address>".to_string()
    } else if let Some(host) = host.filter(|h| names_host(trimmed, h)) {
        format!("<host>{}", &trimmed[host.len()..])
    } else {
        return token.to_string();
    };
    replaced + suffix
}

/// `host`, or a name made from it: `host:1234` (a worker id), `host-1234`
/// (a work directory), `host.example.com`.
fn names_host(token: &str, host: &str) -> bool {
    token.strip_prefix(host).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '-', '.']))
}

fn is_hex_address(s: &str) -> bool {
    s.strip_prefix("0x").is_some_and(|hex| hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `10.0.0.5`, `10.0.0.5:9000`, `::1`, `fe80::1%eth0`.
fn is_ip_address(s: &str) -> bool {
    let host = match s.rsplit_once(':') {
        Some((h, port)) if s.matches(':').count() == 1 && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s,
    };
    host.parse::<std::net::IpAddr>().is_ok()
        || (s.contains("::") && s.split('%').next().is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()))
}

#[cfg(test)]
mod tests {
    use super::for_clients;

    #[test]
    fn paths_endpoints_addresses_and_host_names_are_removed() {
        let host = hostname::get().unwrap().to_string_lossy().into_owned();
        let raw = format!(
            "ffmpeg failed (exit status: 1): [h264 @ 0x55d5c8a3b2c0] /var/lib/vidpipe/work/{host}-42/abc/240p/seg_00001.m4s: \
             No space left on device | publishing failed: S3 at http://10.0.0.5:9000/media refused (10.0.0.5:9000) worker {host}:42"
        );
        let shown = for_clients(&raw);
        for secret in ["/var/lib", "0x55d5", "10.0.0.5", "http://", &host] {
            assert!(!shown.contains(secret), "`{secret}` in `{shown}`");
        }
        assert!(
            shown.contains("No space left on device") && shown.contains("<path>") && shown.contains("<url>"),
            "{shown}"
        );
        assert_eq!(
            for_clients("not a decodable video: Invalid data found when processing input"),
            "not a decodable video: Invalid data found when processing input"
        );
        assert_eq!(for_clients("speed N/A, 1/2 done"), "speed N/A, 1/2 done");
        assert!(for_clients(&"x".repeat(2000)).chars().count() <= 501);
    }
}
