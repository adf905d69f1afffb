//! Validate one file many times (for profiling): `validate_loop FILE [N]`.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: validate_loop FILE [N]");
    let n: usize = args.next().map(|s| s.parse().expect("N")).unwrap_or(1000);
    let bytes = std::fs::read(path).expect("read");
    let t = std::time::Instant::now();
    let mut warnings = 0;
    for _ in 0..n {
        warnings += seccomp_profile::validate_default(&bytes).warnings().count();
    }
    println!("{:?} per validation ({warnings})", t.elapsed() / n as u32);
    if std::env::var_os("ONLY_VALIDATE").is_some() {
        return;
    }
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(seccomp_profile::json::parse(&bytes).ok());
    }
    println!("{:?} per parse", t.elapsed() / n as u32);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    }
    println!(
        "{:?} per serde_json::Value parse (reference)",
        t.elapsed() / n as u32
    );
}
