//! Configuration: the builder, auto-configuration from the CPU count and
//! the memory the process may use, and validation. Invalid settings are
//! errors, never silently clamped.

use std::time::Duration;

use crate::error::Error;
use crate::size_class::SizeClasses;

/// Which idle buffers go first when idle memory would exceed its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvictionPolicy {
    /// CLOCK-Pro adapted to buffers: a one-off burst of a rare size does not
    /// flush the sizes in steady use. The default.
    #[default]
    ClockPro,
    /// Idle buffers form a stack: a get takes the most recently returned;
    /// under pressure the least recently returned go first.
    Lifo,
}

/// When buffer memory is zeroed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Zeroing {
    /// Zero on get and scrub on return (the default): a caller never sees
    /// another caller's bytes, even if someone wrote to a buffer after
    /// returning it.
    #[default]
    Always,
    /// Scrub on return only. Gets still see zeros, since idle buffers are
    /// kept scrubbed; saves the get-side pass.
    OnPut,
    /// Never zero while pooled: a get may see a previous caller's bytes.
    /// Only for callers that overwrite every byte they read, and never for
    /// secrets. Memory is still scrubbed before it goes back to the system.
    Never,
}

impl Zeroing {
    /// Whether a returned buffer is scrubbed before it is kept.
    pub(crate) fn scrubs_on_put(self) -> bool {
        self != Zeroing::Never
    }
}

/// Settings derived from the number of CPUs (the seed's "System Scaling"
/// table, interpolated between its rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoConfig {
    /// Buffers each thread keeps for itself, per pool.
    pub tls_cache_size: usize,
    /// Shared shards (a power of two).
    pub num_shards: usize,
    /// Idle buffers each shard keeps at most.
    pub max_buffers_per_shard: usize,
}

impl AutoConfig {
    /// The configuration for a machine with `cpus` CPUs. A pure function:
    ///
    /// | cpus | tls_cache_size | num_shards | max_buffers_per_shard |
    /// |---|---|---|---|
    /// | 1–2 | 2–4 | 4 | 16 |
    /// | 4 | 4 | 4 | 16 |
    /// | 8 | 6 | 8 | 16 |
    /// | 16 | 6 | 8 | 32 |
    /// | 32 | 8 | 16 | 64 |
    /// | 64 | 8 | 32 | 64 |
    /// | 128 | 8 | 64 | 64 |
    /// | 256+ | 8 | 128 | 64 |
    pub fn for_cpus(cpus: usize) -> AutoConfig {
        let cpus = cpus.max(1);
        // Rows between table entries take the next larger entry's values.
        let p = cpus.checked_next_power_of_two().unwrap_or(1 << (usize::BITS - 1));
        let tls_cache_size = match cpus {
            1 => 2,
            2..=4 => 4,
            5..=16 => 6,
            _ => 8,
        };
        let num_shards = if p <= 8 { p.max(4) } else { (p / 2).min(128) };
        let max_buffers_per_shard = match cpus {
            0..=8 => 16,
            9..=16 => 32,
            _ => 64,
        };
        AutoConfig { tls_cache_size, num_shards, max_buffers_per_shard }
    }

    /// The configuration for this machine (the CPUs this process may run
    /// on, read without allocating).
    pub fn detect() -> AutoConfig {
        AutoConfig::for_cpus(crate::os::cpu_count())
    }
}

/// Limits of each setting, checked by [`Builder::build`].
pub(crate) const MAX_TLS_CACHE: usize = 1024;
pub(crate) const MAX_SHARDS: usize = 1024;
pub(crate) const MAX_BUFFERS_PER_SHARD: usize = 1 << 20;
pub(crate) const MAX_MIN_BUFFER_SIZE: usize = 1 << 40;
/// Default smallest buffer capacity: 1 MiB.
pub const DEFAULT_MIN_BUFFER_SIZE: usize = 1 << 20;
/// The default idle-memory budget is this share of the memory the process
/// may use (1/16: 1.5 GiB of 24 GiB), and never below the seed table's
/// `num_shards * max_buffers_per_shard * min_buffer_size`.
pub const DEFAULT_BUDGET_SHARE: u64 = 16;
/// Default idle decay: 10 s, jemalloc's `dirty_decay_ms`.
pub const DEFAULT_IDLE_DECAY: Duration = Duration::from_secs(10);
/// Longest idle decay accepted: one day (longer is a mistake, not a
/// setting; 0 turns decay off).
pub const MAX_IDLE_DECAY: Duration = Duration::from_secs(24 * 3600);

/// The default idle-memory budget for a process that may use `memory`
/// bytes (0: unknown), at least `floor` (the seed table's product): a pure
/// function, like [`AutoConfig::for_cpus`].
pub(crate) fn default_budget(memory: u64, floor: usize) -> usize {
    let share = usize::try_from(memory / DEFAULT_BUDGET_SHARE).unwrap_or(usize::MAX);
    share.max(floor)
}

/// A validated configuration, as the pool uses it.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) tls_cache_size: usize,
    pub(crate) max_buffers_per_shard: usize,
    pub(crate) num_shards: usize,
    pub(crate) pinned: bool,
    pub(crate) policy: EvictionPolicy,
    pub(crate) zeroing: Zeroing,
    pub(crate) max_pooled_bytes: usize,
    pub(crate) classes: SizeClasses,
    /// Buffers get a tail page for the C API's overflow canary.
    pub(crate) canary: bool,
    /// Idle buffers older than this are released; 0: never.
    pub(crate) idle_decay_ns: u64,
    /// Classes of whole huge pages are backed by transparent huge pages.
    pub(crate) huge_pages: bool,
}

/// Builds a [`BufferPool`](crate::BufferPool) (`build` is in `pool.rs`);
/// every setting left alone comes from
/// [`AutoConfig::detect`] or the documented default.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Builder {
    tls_cache_size: Option<usize>,
    min_buffer_size: Option<usize>,
    max_buffers_per_shard: Option<usize>,
    num_shards: Option<usize>,
    pinned_memory: bool,
    eviction_policy: EvictionPolicy,
    zeroing: Zeroing,
    max_pooled_bytes: Option<usize>,
    canary: bool,
    idle_decay: Option<Duration>,
    huge_pages: Option<bool>,
}

impl Builder {
    /// A builder with every setting at its default.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Buffers each thread caches per pool, 0..=1024 (0 disables the
    /// thread cache). Default: auto-configured.
    pub fn tls_cache_size(mut self, buffers: usize) -> Self {
        self.tls_cache_size = Some(buffers);
        self
    }

    /// Smallest capacity allocated or kept, 1 byte..=1 TiB, rounded up to
    /// a size class (whole pages; see the crate docs for the classes).
    /// Default 1 MiB.
    pub fn min_buffer_size(mut self, bytes: usize) -> Self {
        self.min_buffer_size = Some(bytes);
        self
    }

    /// Idle buffers each shard keeps, 1..=2^20. Default: auto-configured.
    pub fn max_buffers_per_shard(mut self, buffers: usize) -> Self {
        self.max_buffers_per_shard = Some(buffers);
        self
    }

    /// Number of shards: a power of two, 1..=1024. Default: auto-configured.
    pub fn num_shards(mut self, shards: usize) -> Self {
        self.num_shards = Some(shards);
        self
    }

    /// Lock buffers in RAM (mlock) and keep them out of core dumps. When the
    /// system refuses, the buffer stays usable unpinned and
    /// `Stats::pin_failures` counts it. Default off.
    pub fn pinned_memory(mut self, pinned: bool) -> Self {
        self.pinned_memory = pinned;
        self
    }

    /// Which idle buffers are released first under the budget. Default
    /// [`EvictionPolicy::ClockPro`].
    pub fn eviction_policy(mut self, policy: EvictionPolicy) -> Self {
        self.eviction_policy = policy;
        self
    }

    /// When memory is zeroed. Default [`Zeroing::Always`].
    pub fn zeroing(mut self, zeroing: Zeroing) -> Self {
        self.zeroing = zeroing;
        self
    }

    /// Budget for idle bytes (shards plus every thread's cache). 0 keeps
    /// nothing idle. Default: 1/[`DEFAULT_BUDGET_SHARE`] of the memory the
    /// process may use (its cgroup v2 `memory.max` where one is set, else
    /// physical memory), and at least `max_buffers_per_shard * num_shards
    /// *` the smallest capacity.
    pub fn max_pooled_bytes(mut self, bytes: usize) -> Self {
        self.max_pooled_bytes = Some(bytes);
        self
    }

    /// Idle buffers (in the shards or in any thread's cache) left unused
    /// for about this long are scrubbed and released, without [`trim`]:
    /// each is released between one and two periods after it last went
    /// idle, by the pool's own calls (a few buffers per call), and a
    /// thread's cache at that thread's next call. No thread is started: a
    /// process that stops calling keeps what is idle until its next call
    /// or `trim`. [`Duration::ZERO`] turns decay off; at most
    /// [`MAX_IDLE_DECAY`]. Default [`DEFAULT_IDLE_DECAY`] (10 s).
    ///
    /// [`trim`]: crate::BufferPool::trim
    pub fn idle_decay(mut self, decay: Duration) -> Self {
        self.idle_decay = Some(decay);
        self
    }

    /// Back classes of whole huge pages (2 MiB, 4 MiB, 6 MiB, then every
    /// class from 8 MiB) with transparent huge pages where the system
    /// allows them (`MADV_HUGEPAGE`, which the `madvise` mode needs): a
    /// first touch then costs a fault per 2 MiB, not per 4 KiB. Default on.
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = Some(on);
        self
    }

    /// Pools used through the C API carry an overflow canary.
    pub(crate) fn with_canary(mut self) -> Self {
        self.canary = true;
        self
    }

    pub(crate) fn config(self) -> Result<Config, Error> {
        let auto = AutoConfig::detect();
        let tls_cache_size = self.tls_cache_size.unwrap_or(auto.tls_cache_size);
        if tls_cache_size > MAX_TLS_CACHE {
            return Err(Error::invalid(
                "tls_cache_size",
                format_args!("must be at most {MAX_TLS_CACHE} buffers, got {tls_cache_size}"),
            ));
        }
        let min = self.min_buffer_size.unwrap_or(DEFAULT_MIN_BUFFER_SIZE);
        if min == 0 || min > MAX_MIN_BUFFER_SIZE {
            return Err(Error::invalid("min_buffer_size", format_args!("must be between 1 byte and 1 TiB, got {min}")));
        }
        let per_shard = self.max_buffers_per_shard.unwrap_or(auto.max_buffers_per_shard);
        if per_shard == 0 || per_shard > MAX_BUFFERS_PER_SHARD {
            return Err(Error::invalid(
                "max_buffers_per_shard",
                format_args!("must be between 1 and {MAX_BUFFERS_PER_SHARD}, got {per_shard}"),
            ));
        }
        let shards = self.num_shards.unwrap_or(auto.num_shards);
        if !shards.is_power_of_two() || shards > MAX_SHARDS {
            return Err(Error::invalid(
                "num_shards",
                format_args!("must be a power of two between 1 and {MAX_SHARDS}, got {shards}"),
            ));
        }
        let decay = self.idle_decay.unwrap_or(DEFAULT_IDLE_DECAY);
        if decay > MAX_IDLE_DECAY {
            return Err(Error::invalid(
                "idle_decay",
                format_args!("must be at most {} s (0 turns decay off), got {decay:?}", MAX_IDLE_DECAY.as_secs()),
            ));
        }
        let page = crate::os::page_size();
        let base = SizeClasses::new(min, usize::MAX, page).base();
        let max_pooled_bytes = self.max_pooled_bytes.unwrap_or_else(|| {
            default_budget(crate::os::memory_limit(), base.saturating_mul(per_shard).saturating_mul(shards))
        });
        Ok(Config {
            tls_cache_size,
            max_buffers_per_shard: per_shard,
            num_shards: shards,
            pinned: self.pinned_memory,
            policy: self.eviction_policy,
            zeroing: self.zeroing,
            max_pooled_bytes,
            classes: SizeClasses::new(min, max_pooled_bytes, page),
            canary: self.canary,
            idle_decay_ns: decay.as_nanos() as u64,
            huge_pages: self.huge_pages.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_config_reproduces_the_seed_table() {
        let table = [(4, 4, 4, 16), (8, 6, 8, 16), (16, 6, 8, 32), (32, 8, 16, 64), (64, 8, 32, 64), (128, 8, 64, 64)];
        for (cpus, tls, shards, per_shard) in table {
            let want = AutoConfig { tls_cache_size: tls, num_shards: shards, max_buffers_per_shard: per_shard };
            assert_eq!(AutoConfig::for_cpus(cpus), want, "{cpus} cpus");
        }
    }

    #[test]
    fn auto_config_interpolates_within_bounds_and_monotonically() {
        let mut prev = AutoConfig::for_cpus(0);
        for cpus in 0..=4096 {
            let a = AutoConfig::for_cpus(cpus);
            assert!(a.num_shards.is_power_of_two() && (4..=128).contains(&a.num_shards), "{cpus}: {a:?}");
            assert!((2..=8).contains(&a.tls_cache_size), "{cpus}: {a:?}");
            assert!((16..=64).contains(&a.max_buffers_per_shard), "{cpus}: {a:?}");
            assert!(a.num_shards >= prev.num_shards && a.tls_cache_size >= prev.tls_cache_size);
            assert!(a.max_buffers_per_shard >= prev.max_buffers_per_shard);
            prev = a;
        }
        assert_eq!(AutoConfig::for_cpus(2), AutoConfig { tls_cache_size: 4, num_shards: 4, max_buffers_per_shard: 16 });
        assert_eq!(AutoConfig::for_cpus(usize::MAX).num_shards, 128);
    }

    fn err_setting(b: Builder) -> &'static str {
        match b.config() {
            Err(Error::InvalidConfig { setting, reason }) => {
                assert!(!reason.is_empty());
                setting
            }
            other => panic!("expected an InvalidConfig error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_settings_are_errors_not_clamped() {
        assert_eq!(err_setting(Builder::new().num_shards(0)), "num_shards");
        assert_eq!(err_setting(Builder::new().num_shards(6)), "num_shards");
        assert_eq!(err_setting(Builder::new().num_shards(2048)), "num_shards");
        assert_eq!(err_setting(Builder::new().min_buffer_size(0)), "min_buffer_size");
        assert_eq!(err_setting(Builder::new().min_buffer_size(usize::MAX)), "min_buffer_size");
        assert_eq!(err_setting(Builder::new().tls_cache_size(1_000_000)), "tls_cache_size");
        assert_eq!(err_setting(Builder::new().max_buffers_per_shard(0)), "max_buffers_per_shard");
        assert_eq!(err_setting(Builder::new().idle_decay(MAX_IDLE_DECAY + Duration::from_millis(1))), "idle_decay");
        assert!(Builder::new().idle_decay(MAX_IDLE_DECAY).config().is_ok());
        assert_eq!(Builder::new().idle_decay(Duration::ZERO).config().unwrap().idle_decay_ns, 0);
        let msg = Builder::new().num_shards(6).config().unwrap_err().to_string();
        assert!(msg.contains("num_shards") && msg.contains('6'), "{msg}");
    }

    #[test]
    fn default_budget_is_a_share_of_memory_never_below_the_seed_table() {
        const GIB: u64 = 1 << 30;
        assert_eq!(default_budget(24 * GIB, 64 << 20), 1536 << 20);
        assert_eq!(default_budget(2 * GIB, 64 << 20), 128 << 20, "a 2 GiB cgroup");
        assert_eq!(default_budget(512 << 20, 64 << 20), 64 << 20, "the seed table's product is the floor");
        assert_eq!(default_budget(0, 64 << 20), 64 << 20, "memory unknown");
        assert_eq!(default_budget(u64::MAX, 1), (u64::MAX / 16) as usize);
    }

    #[test]
    fn defaults_follow_auto_config_and_budget_formula() {
        let c = Builder::new().num_shards(4).max_buffers_per_shard(16).config().unwrap();
        let memory = crate::os::memory_limit();
        assert_eq!(c.max_pooled_bytes, default_budget(memory, 64 << 20));
        assert!(c.max_pooled_bytes >= 64 << 20);
        assert_eq!(c.idle_decay_ns, 10_000_000_000);
        assert!(c.huge_pages);
        let tuned = Builder::new().num_shards(4).max_buffers_per_shard(16).max_pooled_bytes(64 << 20).config().unwrap();
        assert_eq!(tuned.max_pooled_bytes, 64 << 20);
        assert_eq!(c.classes.base(), 1 << 20);
        assert_eq!(c.zeroing, Zeroing::Always);
        assert_eq!(c.policy, EvictionPolicy::ClockPro);
        let explicit = Builder::new().max_pooled_bytes(0).tls_cache_size(0).config().unwrap();
        assert_eq!(explicit.classes.count(), 0);
        assert_eq!(explicit.tls_cache_size, 0);
    }
}
