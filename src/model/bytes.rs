//! Sizes as Prometheus writes them (`--storage.tsdb.retention.size`,
//! alecthomas/units' `ParseBase2Bytes`): a number and a unit, possibly
//! several (`1GB512MB`), decimals allowed, every unit a power of 1024:
//! `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`,
//! `EB`/`EiB`.

/// Bytes `text` stands for.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size like 512MB or 2GB (B, KB, MB, GB, TB, PB, EB; powers of 1024)"
        )
    };
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let power = match &rest[..unit_len] {
            "B" => 0,
            "KB" | "KiB" => 1,
            "MB" | "MiB" => 2,
            "GB" | "GiB" => 3,
            "TB" | "TiB" => 4,
            "PB" | "PiB" => 5,
            "EB" | "EiB" => 6,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * 1024f64.powi(power);
    }
    if !total.is_finite() || total >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn prometheus_sizes() {
        assert_eq!(parse_bytes("512MB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1KiB"), Ok(1024));
        assert_eq!(parse_bytes("1GB512MB"), Ok((1 << 30) + (512 << 20)));
        assert_eq!(parse_bytes("1.5KB"), Ok(1536));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "12", "MB", "1mb", "1 MB", "-1MB", "1XB", "1..5MB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
