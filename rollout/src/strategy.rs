//! A rollout's strategy (DESIGN.md section 5) and the pure arithmetic of staged rollouts:
//! parsing and validating waves and `max_unavailable`, the stable node order, and how many
//! nodes each wave reaches. No I/O and no clock: the rollout engine owns time and state.
//!
//! Choices made here, relied on by the engine and the tests:
//! - A wave is a cumulative target: a count (`"3"`: the first 3 nodes in order) or a whole
//!   percentage of the matching nodes (`"25%"`, rounded up). Fractional percentages (`12.5%`)
//!   are refused, so every wave list prints back to the text it came from.
//! - The last wave must be written `100%`; it is never appended silently, because the wire
//!   contract says a list "must end with 100%" and a list that stops short is more likely a
//!   typo than a wish. Parsing refuses an empty list; the caller maps an empty proto field to
//!   [`default_waves`].
//! - Monotonicity is checked at parse time only between waves of the same kind: each count
//!   must be larger than every earlier count, each percentage larger than every earlier
//!   percentage. A count and a percentage cannot be compared without the fleet size, so a
//!   mixed list is resolved by [`plan`] with a running maximum: a wave that resolves to fewer
//!   nodes than an earlier one reaches no new node (`25%,2,100%` on 100 nodes is 25, 25, 100).
//! - Waves that reach no new node are kept as empty waves, never collapsed, so wave `i` of
//!   the plan is always item `i` of the strategy (on one node `1,25%,100%` plans to 1, 1, 1).
//!   The engine is expected to finish an empty wave at once.

use std::collections::BTreeMap;
use std::fmt;
use std::num::IntErrorKind;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::selector::Labels;

/// The well-known zone label, preferred when ordering nodes.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The plain zone label, used when the well-known one is absent.
pub const PLAIN_ZONE_LABEL: &str = "zone";
/// Default waves, as text.
pub const DEFAULT_WAVES: &str = "1,25%,100%";
/// Default `max_unavailable`, as text.
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";
/// Default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// One wave: how many of the matching nodes are targeted once it has started (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaveSpec {
    /// The first `n` nodes in order (fewer when the fleet is smaller); `n >= 1`.
    Count(u32),
    /// This whole percentage of the matching nodes, rounded up; `1..=100`.
    Percent(u8),
}

impl WaveSpec {
    /// Parse one wave (`"3"`, `"25%"`); surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self> {
        match parse_amount(text, "wave")? {
            Amount::Count(n) => Ok(WaveSpec::Count(n)),
            Amount::Percent(p) => Ok(WaveSpec::Percent(p)),
        }
    }

    /// The cumulative number of nodes this wave alone asks for out of `total`.
    pub fn resolve(self, total: usize) -> usize {
        match self {
            WaveSpec::Count(n) => usize::try_from(n).map_or(total, |n| n.min(total)),
            WaveSpec::Percent(p) => percent_of(total, p),
        }
    }
}

impl fmt::Display for WaveSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveSpec::Count(n) => write!(f, "{n}"),
            WaveSpec::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `1,25%,100%`.
pub fn default_waves() -> Vec<WaveSpec> {
    vec![
        WaveSpec::Count(1),
        WaveSpec::Percent(25),
        WaveSpec::Percent(100),
    ]
}

/// Parse a comma-separated wave list (`"1,25%,100%"`) and validate it.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSpec>> {
    if text.trim().is_empty() {
        return Err(Error::invalid("waves: empty list"));
    }
    let items: Vec<&str> = text.split(',').collect();
    parse_wave_items(&items)
}

/// Parse a wave list given item by item (the proto's `repeated string waves`) and validate
/// it. An empty slice is an error: the caller decides whether empty means the defaults.
pub fn parse_waves_list(items: &[String]) -> Result<Vec<WaveSpec>> {
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    parse_wave_items(&items)
}

fn parse_wave_items(items: &[&str]) -> Result<Vec<WaveSpec>> {
    let waves = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.trim().is_empty() {
                Err(Error::invalid(format!("waves: item {} is empty", i + 1)))
            } else {
                WaveSpec::parse(item)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    validate_waves(&waves)?;
    Ok(waves)
}

/// Print waves as `parse_waves` reads them: `1,25%,100%`.
pub fn format_waves(waves: &[WaveSpec]) -> String {
    waves
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Check a wave list: not empty, no `0` or `0%`, no percentage over 100, counts and
/// percentages each strictly increasing, and `100%` last.
pub fn validate_waves(waves: &[WaveSpec]) -> Result<()> {
    let Some(last) = waves.last() else {
        return Err(Error::invalid("waves: empty list"));
    };
    let mut last_count: Option<u32> = None;
    let mut last_percent: Option<u8> = None;
    for wave in waves {
        match *wave {
            WaveSpec::Count(0) | WaveSpec::Percent(0) => {
                return Err(Error::invalid(format!(
                    "wave \"{wave}\" reaches no node: use at least 1 or 1%"
                )));
            }
            WaveSpec::Percent(p) if p > 100 => {
                return Err(Error::invalid(format!("wave \"{wave}\" is over 100%")));
            }
            WaveSpec::Count(n) => {
                if let Some(prev) = last_count.filter(|&prev| n <= prev) {
                    return Err(Error::invalid(format!(
                        "wave \"{wave}\" does not increase on the earlier wave \"{prev}\""
                    )));
                }
                last_count = Some(n);
            }
            WaveSpec::Percent(p) => {
                if let Some(prev) = last_percent.filter(|&prev| p <= prev) {
                    return Err(Error::invalid(format!(
                        "wave \"{wave}\" does not increase on the earlier wave \"{prev}%\""
                    )));
                }
                last_percent = Some(p);
            }
        }
    }
    if *last != WaveSpec::Percent(100) {
        return Err(Error::invalid(format!(
            "the last wave must be \"100%\", not \"{last}\""
        )));
    }
    Ok(())
}

/// The cumulative number of nodes targeted after each wave, out of `total` matching nodes.
/// One entry per wave (empty waves are kept); never decreasing; the last is `total` for a
/// valid list.
pub fn plan(total: usize, waves: &[WaveSpec]) -> Vec<usize> {
    let mut reached = 0;
    waves
        .iter()
        .map(|wave| {
            reached = reached.max(wave.resolve(total));
            reached
        })
        .collect()
}

/// The wave (index into `cumulative`, as returned by [`plan`]) that first targets the node
/// at `index` in [`order_nodes`] order; `None` when no wave reaches it.
pub fn wave_of(cumulative: &[usize], index: usize) -> Option<usize> {
    // `cumulative` never decreases, so the waves that stop at or before `index` come first.
    let wave = cumulative.partition_point(|&reached| reached <= index);
    (wave < cumulative.len()).then_some(wave)
}

/// The order in which waves take nodes: by zone (the `topology.kubernetes.io/zone` label,
/// else the `zone` label; nodes with neither, or an empty one, last), then by name. The
/// result depends only on the set of nodes, not on the order they are given in, so a resumed
/// rollout picks the same nodes. Node names are expected to be unique; duplicates are kept.
pub fn order_nodes(nodes: &[(String, Labels)]) -> Vec<String> {
    order_by_zone(nodes.iter().map(|(name, labels)| (name.as_str(), labels)))
}

/// [`order_nodes`] over borrowed names and labels.
pub fn order_by_zone<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a Labels)>) -> Vec<String> {
    let mut keyed: Vec<(Option<&str>, &str)> = nodes
        .into_iter()
        .map(|(name, labels)| (zone(labels), name))
        .collect();
    keyed.sort_unstable_by(|(za, na), (zb, nb)| {
        // `None` sorts first for `Option`; missing zones go last instead.
        za.is_none()
            .cmp(&zb.is_none())
            .then_with(|| za.cmp(zb))
            .then_with(|| na.cmp(nb))
    });
    keyed.into_iter().map(|(_, name)| name.to_owned()).collect()
}

fn zone(labels: &BTreeMap<String, String>) -> Option<&str> {
    [ZONE_LABEL, PLAIN_ZONE_LABEL]
        .iter()
        .filter_map(|key| labels.get(*key))
        .map(String::as_str)
        .find(|zone| !zone.is_empty())
}

/// Most targeted nodes that may be applying or failed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxUnavailable {
    /// At most this many nodes; `n >= 1`.
    Count(u32),
    /// This whole percentage of the matching nodes, rounded up; `1..=100`.
    Percent(u8),
}

impl Default for MaxUnavailable {
    /// `25%`.
    fn default() -> Self {
        MaxUnavailable::Percent(25)
    }
}

impl MaxUnavailable {
    /// Parse `"2"` or `"10%"`; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(Error::invalid("max_unavailable is empty"));
        }
        let value = match parse_amount(text, "max_unavailable")? {
            Amount::Count(n) => MaxUnavailable::Count(n),
            Amount::Percent(p) => MaxUnavailable::Percent(p),
        };
        value.validate()?;
        Ok(value)
    }

    /// Refuse `0`, `0%` and percentages over 100.
    pub fn validate(self) -> Result<()> {
        match self {
            MaxUnavailable::Count(0) | MaxUnavailable::Percent(0) => Err(Error::invalid(format!(
                "max_unavailable \"{self}\" would stall every rollout: use at least 1"
            ))),
            MaxUnavailable::Percent(p) if p > 100 => Err(Error::invalid(format!(
                "max_unavailable \"{self}\" is over 100%"
            ))),
            _ => Ok(()),
        }
    }

    /// The number of nodes this allows out of `total` matching nodes: at most `total`, and
    /// at least 1 so that a rollout can always make progress.
    pub fn resolve(self, total: usize) -> usize {
        let n = match self {
            MaxUnavailable::Count(n) => usize::try_from(n).map_or(total, |n| n.min(total)),
            MaxUnavailable::Percent(p) => percent_of(total, p),
        };
        n.max(1)
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What happens between two waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pause {
    /// The next wave starts at once.
    #[default]
    None,
    /// Wait this long (more than zero), then start the next wave.
    Duration(Duration),
    /// Stay paused until someone resumes the rollout.
    Manual,
}

/// How a rollout proceeds (DESIGN.md section 5). Stored as text and milliseconds (see
/// [`StoredStrategy`]), so the database holds what a person would type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "StoredStrategy", try_from = "StoredStrategy")]
pub struct Strategy {
    /// Cumulative wave targets; see [`validate_waves`].
    pub waves: Vec<WaveSpec>,
    /// Most targeted nodes applying or failed at once.
    pub max_unavailable: MaxUnavailable,
    /// Failed nodes tolerated; one more fails the rollout.
    pub failure_threshold: u32,
    /// How long a node may stay applying, and a wave may go without progress.
    pub progress_deadline: Duration,
    /// What happens between waves.
    pub pause: Pause,
    /// Whether a failed rollout returns touched nodes to the stable version.
    pub auto_rollback: bool,
}

impl Default for Strategy {
    /// Waves `1,25%,100%`, `max_unavailable` 25%, no failure tolerated, a 5 minute deadline,
    /// no pause, automatic rollback.
    fn default() -> Self {
        Strategy {
            waves: default_waves(),
            max_unavailable: MaxUnavailable::default(),
            failure_threshold: 0,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            pause: Pause::None,
            auto_rollback: true,
        }
    }
}

/// [`Strategy`] as stored: waves and `max_unavailable` as text, durations in milliseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredStrategy {
    /// `1,25%,100%`.
    pub waves: String,
    /// `25%`.
    pub max_unavailable: String,
    /// Failed nodes tolerated.
    pub failure_threshold: u32,
    /// Progress deadline in milliseconds.
    pub progress_deadline_ms: u64,
    /// Pause between waves in milliseconds; absent for none.
    #[serde(default)]
    pub pause_ms: Option<u64>,
    /// Pause until resumed.
    #[serde(default)]
    pub pause_manual: bool,
    /// Roll back on failure.
    pub auto_rollback: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<Strategy> for StoredStrategy {
    fn from(s: Strategy) -> Self {
        StoredStrategy {
            waves: format_waves(&s.waves),
            max_unavailable: s.max_unavailable.to_string(),
            failure_threshold: s.failure_threshold,
            progress_deadline_ms: millis(s.progress_deadline),
            pause_ms: match s.pause {
                Pause::Duration(d) => Some(millis(d)),
                _ => None,
            },
            pause_manual: s.pause == Pause::Manual,
            auto_rollback: s.auto_rollback,
        }
    }
}

impl TryFrom<StoredStrategy> for Strategy {
    type Error = Error;
    fn try_from(s: StoredStrategy) -> Result<Self> {
        let strategy = Strategy {
            waves: parse_waves(&s.waves)?,
            max_unavailable: MaxUnavailable::parse(&s.max_unavailable)?,
            failure_threshold: s.failure_threshold,
            // A stored record must always load, so out-of-range durations (never written by
            // this version) are clamped rather than refused.
            progress_deadline: Duration::from_millis(s.progress_deadline_ms.max(1)),
            pause: match (s.pause_manual, s.pause_ms) {
                (true, _) => Pause::Manual,
                (false, Some(ms)) => Pause::Duration(Duration::from_millis(ms.max(1))),
                (false, None) => Pause::None,
            },
            auto_rollback: s.auto_rollback,
        };
        strategy.validate()?;
        Ok(strategy)
    }
}

impl Strategy {
    /// Every matching node at once (`100%`, `max_unavailable` 100%): what rollouts were
    /// before staged rollouts, and how a rollback proceeds apart from `max_unavailable`.
    pub fn immediate() -> Self {
        Strategy {
            waves: vec![WaveSpec::Percent(100)],
            max_unavailable: MaxUnavailable::Percent(100),
            ..Strategy::default()
        }
    }

    /// Check every field: the waves, `max_unavailable`, and a progress deadline and pause
    /// duration of at least a millisecond (they are stored in milliseconds).
    pub fn validate(&self) -> Result<()> {
        validate_waves(&self.waves)?;
        self.max_unavailable.validate()?;
        if self.progress_deadline < Duration::from_millis(1) {
            return Err(Error::invalid("progress_deadline must be at least 1ms"));
        }
        if let Pause::Duration(d) = self.pause
            && d < Duration::from_millis(1)
        {
            return Err(Error::invalid(
                "pause duration must be at least 1ms: leave pause unset to start the next wave at once",
            ));
        }
        Ok(())
    }

    /// The cumulative number of nodes targeted after each wave, out of `total`; see [`plan`].
    pub fn plan(&self, total: usize) -> Vec<usize> {
        plan(total, &self.waves)
    }
}

enum Amount {
    Count(u32),
    Percent(u8),
}

/// Parse `"<digits>"` or `"<digits>%"`, naming `what` in errors. Range checks beyond the
/// type (zero, over 100%) are left to the callers' validation.
fn parse_amount(text: &str, what: &str) -> Result<Amount> {
    let trimmed = text.trim();
    let (digits, percent) = match trimmed.strip_suffix('%') {
        Some(digits) => (digits.trim_end(), true),
        None => (trimmed, false),
    };
    if percent && digits.contains(['.', ',']) && !digits.is_empty() {
        return Err(Error::invalid(format!(
            "{what} \"{trimmed}\": fractional percentages are not supported, use a whole number"
        )));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let expected = if what == "wave" {
            "a node count (\"3\") or a percentage (\"25%\")"
        } else {
            "a count (\"2\") or a percentage (\"10%\")"
        };
        return Err(Error::invalid(format!(
            "{what} \"{trimmed}\" is not {expected}"
        )));
    }
    let too_large = || Error::invalid(format!("{what} \"{trimmed}\" is too large"));
    if percent {
        // Anything that does not fit a u8 is over 100% anyway.
        let p = digits.parse::<u8>().map_err(|e| match e.kind() {
            IntErrorKind::PosOverflow => {
                Error::invalid(format!("{what} \"{trimmed}\" is over 100%"))
            }
            _ => too_large(),
        })?;
        Ok(Amount::Percent(p))
    } else {
        let n = digits.parse::<u32>().map_err(|_| too_large())?;
        Ok(Amount::Count(n))
    }
}

/// `ceil(total * p / 100)` without overflow; at most `total` for `p <= 100`.
fn percent_of(total: usize, p: u8) -> usize {
    let total_wide = total as u128;
    let share = (total_wide * u128::from(p.min(100))).div_ceil(100);
    usize::try_from(share).unwrap_or(total)
}
