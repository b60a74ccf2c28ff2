//! Host metrics with node_exporter's names, labels and semantics, read where
//! node_exporter reads them: `/proc/stat` (CPU as the kernel's cumulative
//! counters, boot time, context switches, forks, interrupts, processes),
//! `/proc/meminfo`, `/proc/loadavg`, `/proc/net/dev` (+ `rx_nohandler` from
//! sysfs), `/proc/1/mounts` + statfs for filesystems; plus mlmon's own
//! process figures from `/proc/self` (`process_*`, as client libraries
//! export them). Each file is parsed by a pure function; a file that cannot
//! be read or parsed costs only its own families.

use crate::model::{Labels, LabelsBuilder};

/// One collected value: metric name, labels besides the name, value.
pub type Point = (String, Vec<(&'static str, String)>, f64);

/// Everything this host offers, and what could not be read (file: reason).
#[derive(Debug, Default)]
pub struct HostSnapshot {
    pub points: Vec<Point>,
    pub errors: Vec<String>,
}

impl HostSnapshot {
    /// The points as label sets with `base` (e.g. job and instance) added
    /// where a point does not set that label itself.
    pub fn labelled(&self, base: &[(&str, &str)]) -> Vec<(Labels, f64)> {
        self.points
            .iter()
            .filter_map(|(name, labels, v)| {
                let mut b = LabelsBuilder::new();
                b.push("__name__", name.as_str());
                for (n, v) in base {
                    if !labels.iter().any(|(own, _)| own == n) {
                        b.push(*n, *v);
                    }
                }
                for (n, v) in labels {
                    b.push(*n, v.as_str());
                }
                Some((b.build().ok()?, *v))
            })
            .collect()
    }
}

/// Reads one file's points into the list, or says why it could not.
type Parser<'a> = dyn Fn(&str, &mut Vec<Point>) -> Result<(), String> + 'a;

/// Reads every host family once.
pub fn collect() -> HostSnapshot {
    let mut snap = HostSnapshot::default();
    let ticks = clock_ticks();
    let mut read = |path: &str, parse: &Parser| match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Err(e) = parse(&text, &mut snap.points) {
                snap.errors.push(format!("{path}: {e}"));
            }
        }
        Err(e) => snap.errors.push(format!("{path}: {e}")),
    };
    read("/proc/stat", &|t, out| parse_stat(t, ticks, out));
    read("/proc/meminfo", &parse_meminfo);
    read("/proc/loadavg", &parse_loadavg);
    read("/proc/net/dev", &|t, out| {
        parse_net_dev(t, out, |dev| {
            let base = format!("/sys/class/net/{dev}");
            let loopback = std::fs::read_to_string(format!("{base}/flags"))
                .ok()
                .and_then(|f| u64::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .is_some_and(|f| f & IFF_LOOPBACK != 0);
            let nohandler = std::fs::read_to_string(format!("{base}/statistics/rx_nohandler"))
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok());
            (loopback, nohandler)
        })
    });
    read("/proc/1/mounts", &|t, out| {
        for m in parse_mounts(t) {
            filesystem(&m, out);
        }
        Ok(())
    });
    process(&mut snap.points);
    snap
}

const IFF_LOOPBACK: u64 = 0x8;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a process-wide constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn num(field: Option<&str>, what: &str) -> Result<f64, String> {
    field
        .ok_or_else(|| format!("{what}: missing"))?
        .parse::<f64>()
        .map_err(|_| format!("{what}: not a number"))
}

fn point(out: &mut Vec<Point>, name: &str, labels: Vec<(&'static str, String)>, v: f64) {
    out.push((name.to_string(), labels, v));
}

/// `/proc/stat`: per-CPU times by mode (in clock ticks), and the kernel's
/// counters that node_exporter's stat collector exports.
pub fn parse_stat(text: &str, ticks: f64, out: &mut Vec<Point>) -> Result<(), String> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        if let Some(cpu) = key.strip_prefix("cpu").filter(|c| !c.is_empty()) {
            let values: Vec<f64> = f
                .map(|v| v.parse::<f64>().map_err(|_| format!("{key}: not a number")))
                .collect::<Result<_, _>>()?;
            for (mode, v) in MODES.iter().zip(&values) {
                let labels = vec![("cpu", cpu.to_string()), ("mode", mode.to_string())];
                point(out, "node_cpu_seconds_total", labels, v / ticks);
            }
            for (i, mode) in [(8, "user"), (9, "nice")] {
                if let Some(v) = values.get(i) {
                    let labels = vec![("cpu", cpu.to_string()), ("mode", mode.to_string())];
                    point(out, "node_cpu_guest_seconds_total", labels, v / ticks);
                }
            }
            continue;
        }
        let name = match key {
            "btime" => "node_boot_time_seconds",
            "ctxt" => "node_context_switches_total",
            "processes" => "node_forks_total",
            "intr" => "node_intr_total",
            "procs_running" => "node_procs_running",
            "procs_blocked" => "node_procs_blocked",
            _ => continue,
        };
        point(out, name, Vec::new(), num(f.next(), key)?);
    }
    if !out.iter().any(|p| p.0 == "node_cpu_seconds_total") {
        return Err("no per-CPU lines".into());
    }
    Ok(())
}

/// `/proc/meminfo` as `node_memory_<Field>_bytes` (kB × 1024), or without
/// the suffix for counts; `Active(anon)` becomes `Active_anon`.
pub fn parse_meminfo(text: &str, out: &mut Vec<Point>) -> Result<(), String> {
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(key), Some(value)) = (f.next(), f.next()) else {
            continue;
        };
        let key = key.trim_end_matches(':').replace('(', "_").replace(')', "");
        let v = num(Some(value), &key)?;
        match f.next() {
            Some("kB") => point(
                out,
                &format!("node_memory_{key}_bytes"),
                Vec::new(),
                v * 1024.0,
            ),
            _ => point(out, &format!("node_memory_{key}"), Vec::new(), v),
        }
    }
    if !out.iter().any(|p| p.0 == "node_memory_MemTotal_bytes") {
        return Err("no MemTotal".into());
    }
    Ok(())
}

pub fn parse_loadavg(text: &str, out: &mut Vec<Point>) -> Result<(), String> {
    let mut f = text.split_whitespace();
    for name in ["node_load1", "node_load5", "node_load15"] {
        point(out, name, Vec::new(), num(f.next(), name)?);
    }
    Ok(())
}

/// `/proc/net/dev` as node_exporter's netdev families, per device.
/// `device_info(name)` says whether it is a loopback device (left out, as
/// node_exporter does) and gives `rx_nohandler`, which only sysfs has.
pub fn parse_net_dev(
    text: &str,
    out: &mut Vec<Point>,
    device_info: impl Fn(&str) -> (bool, Option<f64>),
) -> Result<(), String> {
    const RECEIVE: [&str; 8] = [
        "bytes",
        "packets",
        "errs",
        "drop",
        "fifo",
        "frame",
        "compressed",
        "multicast",
    ];
    const TRANSMIT: [&str; 8] = [
        "bytes",
        "packets",
        "errs",
        "drop",
        "fifo",
        "colls",
        "carrier",
        "compressed",
    ];
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        let (loopback, nohandler) = device_info(dev);
        if loopback {
            continue;
        }
        let values: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse::<f64>().map_err(|_| format!("{dev}: not a number")))
            .collect::<Result<_, _>>()?;
        if values.len() < 16 {
            return Err(format!("{dev}: {} fields, want 16", values.len()));
        }
        let labels = || vec![("device", dev.to_string())];
        for (k, v) in RECEIVE.iter().zip(&values[..8]) {
            point(
                out,
                &format!("node_network_receive_{k}_total"),
                labels(),
                *v,
            );
        }
        for (k, v) in TRANSMIT.iter().zip(&values[8..16]) {
            point(
                out,
                &format!("node_network_transmit_{k}_total"),
                labels(),
                *v,
            );
        }
        if let Some(v) = nohandler {
            point(out, "node_network_receive_nohandler_total", labels(), v);
        }
    }
    Ok(())
}

/// A mounted filesystem node_exporter would report.
#[derive(Debug, PartialEq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
}

/// Mount points and filesystem types node_exporter 1.5 leaves out by
/// default (pseudo, runtime and container filesystems, removable media).
fn excluded(m: &Mount) -> bool {
    const FSTYPES: [&str; 23] = [
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "procfs",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
    ];
    if FSTYPES.contains(&m.fstype.as_str()) || m.fstype == "tracefs" {
        return true;
    }
    // Debian's node_exporter default (upstream keeps /run, /mnt and /media
    // but for /run/credentials).
    let p = m.mountpoint.as_str();
    let under = |dir: &str| p == dir || p.starts_with(&format!("{dir}/"));
    ["/dev", "/proc", "/run", "/sys", "/mnt", "/media"]
        .iter()
        .any(|d| under(d))
        || ["/var/lib/docker/", "/var/lib/containers/storage/"]
            .iter()
            .any(|d| p.starts_with(d) && p.len() > d.len())
}

/// `/proc/<pid>/mounts`, with octal escapes (`\040`) decoded, without the
/// excluded ones and without repeated mount points (the last one wins, as
/// it is the one visible).
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let m = Mount {
            device: unescape(f[0]),
            mountpoint: unescape(f[1]),
            fstype: f[2].to_string(),
            readonly: f[3].split(',').any(|o| o == "ro"),
        };
        if excluded(&m) {
            continue;
        }
        out.retain(|o| o.mountpoint != m.mountpoint);
        out.push(m);
    }
    out
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// statfs figures of one mount, or `node_filesystem_device_error` 1.
fn filesystem(m: &Mount, out: &mut Vec<Point>) {
    let labels = || {
        vec![
            ("device", m.device.clone()),
            ("fstype", m.fstype.clone()),
            ("mountpoint", m.mountpoint.clone()),
        ]
    };
    let Ok(path) = std::ffi::CString::new(m.mountpoint.as_bytes()) else {
        return;
    };
    // SAFETY: statfs writes into `buf`, a properly sized out-parameter, and
    // reads the NUL-terminated path.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut buf) } != 0 {
        point(out, "node_filesystem_device_error", labels(), 1.0);
        return;
    }
    let bsize = buf.f_bsize as f64;
    for (name, v) in [
        ("node_filesystem_size_bytes", buf.f_blocks as f64 * bsize),
        ("node_filesystem_free_bytes", buf.f_bfree as f64 * bsize),
        ("node_filesystem_avail_bytes", buf.f_bavail as f64 * bsize),
        ("node_filesystem_files", buf.f_files as f64),
        ("node_filesystem_files_free", buf.f_ffree as f64),
        (
            "node_filesystem_readonly",
            if m.readonly { 1.0 } else { 0.0 },
        ),
        ("node_filesystem_device_error", 0.0),
    ] {
        point(out, name, labels(), v);
    }
}

/// Figures about this process, from /proc/self.
#[derive(Debug, Default, Clone)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

pub fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    let ticks = clock_ticks();
    // SAFETY: sysconf only reads a process-wide constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
            p.cpu_seconds = (num(11) + num(12)) / ticks;
            p.virtual_bytes = num(20);
            p.resident_bytes = num(21) * page;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("btime ")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                })
                .unwrap_or(0.0);
            p.start_time_seconds = boot + num(19) / ticks;
        }
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as f64)
        .unwrap_or(0.0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        p.max_fds = lim.rlim_cur as f64;
    }
    p
}

/// This process' figures, named as client libraries name them.
fn process(out: &mut Vec<Point>) {
    let p = process_stats();
    for (name, v) in [
        ("process_cpu_seconds_total", p.cpu_seconds),
        ("process_resident_memory_bytes", p.resident_bytes),
        ("process_virtual_memory_bytes", p.virtual_bytes),
        ("process_start_time_seconds", p.start_time_seconds),
        ("process_open_fds", p.open_fds),
        ("process_max_fds", p.max_fds),
    ] {
        point(out, name, vec![("job", "mlmon".to_string())], v);
    }
}

/// This machine's name, for the `instance` label.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_gives_cpu_seconds_by_mode_and_kernel_counters() {
        let text = "cpu  10 0 5 100 1 0 2 0 0 0\ncpu0 200 1 50 1000 7 0 3 4 6 8\nintr 12345 1 2\nctxt 99\nbtime 1700000000\nprocesses 42\nprocs_running 3\nprocs_blocked 1\n";
        let mut out = Vec::new();
        parse_stat(text, 100.0, &mut out).unwrap();
        let find = |name: &str, mode: &str| {
            out.iter()
                .find(|p| p.0 == name && p.1.iter().any(|(n, v)| *n == "mode" && v == mode))
                .map(|p| p.2)
        };
        assert_eq!(find("node_cpu_seconds_total", "user"), Some(2.0));
        assert_eq!(find("node_cpu_seconds_total", "steal"), Some(0.04));
        assert_eq!(find("node_cpu_guest_seconds_total", "nice"), Some(0.08));
        // The aggregate "cpu" line is not a CPU.
        assert_eq!(
            out.iter()
                .filter(|p| p.0 == "node_cpu_seconds_total")
                .count(),
            8
        );
        let single = |name: &str| out.iter().find(|p| p.0 == name).map(|p| p.2);
        assert_eq!(single("node_intr_total"), Some(12345.0));
        assert_eq!(single("node_boot_time_seconds"), Some(1.7e9));
        assert_eq!(single("node_forks_total"), Some(42.0));
        let mut out = Vec::new();
        assert!(parse_stat("cpu0 1 2 x\n", 100.0, &mut out).is_err());
    }

    #[test]
    fn meminfo_names_follow_node_exporter() {
        let mut out = Vec::new();
        parse_meminfo(
            "MemTotal:       1000 kB\nActive(anon):     2 kB\nHugePages_Total:       0\n",
            &mut out,
        )
        .unwrap();
        let names: Vec<(&str, f64)> = out.iter().map(|p| (p.0.as_str(), p.2)).collect();
        assert_eq!(
            names,
            vec![
                ("node_memory_MemTotal_bytes", 1024000.0),
                ("node_memory_Active_anon_bytes", 2048.0),
                ("node_memory_HugePages_Total", 0.0)
            ]
        );
    }

    #[test]
    fn net_dev_skips_loopback_and_reads_every_counter() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n  eth0: 100 2 3 4 5 6 7 8 900 10 11 12 13 14 15 16\n";
        let mut out = Vec::new();
        parse_net_dev(text, &mut out, |d| (d == "lo", Some(0.0))).unwrap();
        assert!(out
            .iter()
            .all(|p| p.1 == vec![("device", "eth0".to_string())]));
        let get = |n: &str| out.iter().find(|p| p.0 == n).map(|p| p.2);
        assert_eq!(get("node_network_receive_bytes_total"), Some(100.0));
        assert_eq!(get("node_network_transmit_bytes_total"), Some(900.0));
        assert_eq!(get("node_network_transmit_colls_total"), Some(14.0));
        assert_eq!(get("node_network_receive_nohandler_total"), Some(0.0));
    }

    #[test]
    fn mounts_drop_pseudo_filesystems_and_decode_escapes() {
        let text = "proc /proc proc rw 0 0\n/dev/vda / ext4 rw,relatime 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n/dev/vdb /data/my\\040disk xfs ro 0 0\ntmpfs /mnt/x tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\noverlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n";
        let m = parse_mounts(text);
        assert_eq!(
            m.iter().map(|m| m.mountpoint.as_str()).collect::<Vec<_>>(),
            vec!["/", "/data/my disk"]
        );
        assert!(m[1].readonly);
    }
}
