//! Who is sent next, and to which endpoint.
//!
//! Ready requests wait in one queue. Whenever an endpoint has a free place (at most
//! `max_in_flight` requests each), the waiting request with the fewest estimated prefill tokens
//! goes (shortest-prefill-first; ties by age) — or the oldest, in FIFO order. A request that has
//! waited longer than `starvation` goes before any other, so long prompts are never starved. It
//! goes to the healthy endpoint with the fewest outstanding requests; an endpoint that fails
//! `eject_after` times in a row is ejected from rotation for `eject_for`. `governor` then holds the request
//! to the job's requests/s and prompt tokens/s quotas.

use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

/// Order of the waiting queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Shortest estimated prefill first (ties: oldest first).
    Sjf,
    /// Oldest first.
    Fifo,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub order: Order,
    /// A request waiting this long goes before any other.
    pub starvation: Duration,
    /// Requests in flight at once, per endpoint.
    pub max_in_flight: usize,
    /// Consecutive failed requests after which an endpoint is ejected from rotation.
    pub eject_after: u32,
    pub eject_for: Duration,
    pub requests_per_s: Option<f64>,
    pub prompt_tokens_per_s: Option<f64>,
}

/// governor on tokio's clock, so quotas follow paused time in tests and benchmarks.
#[derive(Debug, Clone)]
pub struct TokioClock(Instant);

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

struct Waiter {
    key: u64,
    seq: u64,
    since: Instant,
    tx: oneshot::Sender<usize>,
}

#[derive(Debug, Clone, Default)]
struct Health {
    outstanding: usize,
    failures: u32,
    ejected_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    endpoints: Vec<Health>,
    seq: u64,
}

pub struct Scheduler {
    cfg: ScheduleConfig,
    state: Mutex<State>,
    clock: TokioClock,
    requests: Option<Limiter>,
    tokens: Option<(Limiter, NonZeroU32)>,
}

/// A place on an endpoint; given back when dropped.
pub struct Slot<'a> {
    sched: &'a Scheduler,
    pub endpoint: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.sched.release(self.endpoint);
    }
}

/// Receives the endpoint; if dropped before the request took it, gives the place back.
struct Pending<'a> {
    sched: &'a Scheduler,
    rx: oneshot::Receiver<usize>,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        if let Ok(ep) = self.rx.try_recv() {
            self.sched.release(ep);
        }
    }
}

fn quota(per_s: f64) -> Option<(Quota, NonZeroU32)> {
    if !(per_s.is_finite() && per_s > 0.0) {
        return None;
    }
    let burst = NonZeroU32::new(per_s.ceil().min(u32::MAX as f64) as u32)?;
    let q = Quota::with_period(Duration::from_secs_f64(1.0 / per_s))?.allow_burst(burst);
    Some((q, burst))
}

impl Scheduler {
    pub fn new(cfg: ScheduleConfig, endpoints: usize) -> Self {
        let clock = TokioClock(Instant::now());
        let limiter = |per_s: Option<f64>| {
            per_s
                .and_then(quota)
                .map(|(q, burst)| (RateLimiter::direct_with_clock(q, clock.clone()), burst))
        };
        Self {
            requests: limiter(cfg.requests_per_s).map(|(l, _)| l),
            tokens: limiter(cfg.prompt_tokens_per_s),
            clock: clock.clone(),
            state: Mutex::new(State {
                endpoints: vec![Health::default(); endpoints],
                ..State::default()
            }),
            cfg,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::domain::lock(&self.state)
    }

    /// Waits for this request's turn and a place on an endpoint.
    pub async fn acquire(&self, prefill_tokens: u64) -> Slot<'_> {
        let endpoint = loop {
            if let Some(ep) = self.turn(prefill_tokens).await {
                break ep;
            }
        };
        let slot = Slot {
            sched: self,
            endpoint,
        };
        if let Some(l) = &self.requests {
            self.wait(|| l.check().map_err(|n| n.wait_time_from(self.clock.now())))
                .await;
        }
        if let Some((l, burst)) = &self.tokens {
            let n = NonZeroU32::new(prefill_tokens.clamp(1, burst.get() as u64) as u32)
                .unwrap_or(NonZeroU32::MIN);
            self.wait(|| match l.check_n(n) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
                // n is clamped to the burst, so this cannot happen; do not block on it.
                Err(_) => Ok(()),
            })
            .await;
        }
        slot
    }

    /// Queues the request and waits until it is dispatched (`None`: lost its sender; queue again).
    async fn turn(&self, prefill_tokens: u64) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            st.seq += 1;
            let seq = st.seq;
            st.waiting.push(Waiter {
                key: match self.cfg.order {
                    Order::Sjf => prefill_tokens,
                    Order::Fifo => 0,
                },
                seq,
                since: Instant::now(),
                tx,
            });
            self.dispatch(&mut st);
        }
        let mut pending = Pending {
            sched: self,
            rx,
            done: false,
        };
        loop {
            // An ejected endpoint comes back on its own: look again when its time is up.
            let now = Instant::now();
            let wake = (self.lock().endpoints.iter())
                .filter_map(|h| h.ejected_until)
                .filter(|&t| t > now)
                .min();
            tokio::select! {
                r = &mut pending.rx => {
                    pending.done = true;
                    return r.ok();
                }
                _ = sleep_until_opt(wake) => self.dispatch(&mut self.lock()),
            }
        }
    }

    async fn wait(&self, mut check: impl FnMut() -> Result<(), Duration>) {
        while let Err(d) = check() {
            tokio::time::sleep(d.max(Duration::from_millis(1))).await;
        }
    }

    fn dispatch(&self, st: &mut State) {
        let now = Instant::now();
        while !st.waiting.is_empty() {
            let free = st
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, h)| h.ejected_until.is_none_or(|t| t <= now))
                .filter(|(_, h)| h.outstanding < self.cfg.max_in_flight)
                .min_by_key(|(i, h)| (h.outstanding, *i))
                .map(|(i, _)| i);
            let Some(ep) = free else { return };
            let starve = self.cfg.starvation;
            let Some(next) = st
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| {
                    let starving = now.duration_since(w.since) >= starve;
                    (!starving, if starving { 0 } else { w.key }, w.seq)
                })
                .map(|(i, _)| i)
            else {
                return;
            };
            let w = st.waiting.swap_remove(next);
            st.endpoints[ep].outstanding += 1;
            if w.tx.send(ep).is_err() {
                st.endpoints[ep].outstanding -= 1;
            }
        }
    }

    fn release(&self, endpoint: usize) {
        let mut st = self.lock();
        if let Some(h) = st.endpoints.get_mut(endpoint) {
            h.outstanding = h.outstanding.saturating_sub(1);
        }
        self.dispatch(&mut st);
    }

    /// Records how a request to `endpoint` went: failures in a row eject it.
    pub fn report(&self, endpoint: usize, ok: bool) -> Option<Duration> {
        let mut st = self.lock();
        let h = st.endpoints.get_mut(endpoint)?;
        if ok {
            h.failures = 0;
            return None;
        }
        h.failures += 1;
        if h.failures < self.cfg.eject_after.max(1) {
            return None;
        }
        // Back in rotation, one more failure ejects it again.
        h.failures = self.cfg.eject_after.saturating_sub(1);
        h.ejected_until = Some(Instant::now() + self.cfg.eject_for);
        Some(self.cfg.eject_for)
    }

    /// Ejects an endpoint now (e.g. it did not answer the warm-up).
    pub fn eject(&self, endpoint: usize) {
        let mut st = self.lock();
        if let Some(h) = st.endpoints.get_mut(endpoint) {
            h.ejected_until = Some(Instant::now() + self.cfg.eject_for);
            h.failures = self.cfg.eject_after.saturating_sub(1);
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cfg(order: Order) -> ScheduleConfig {
        ScheduleConfig {
            order,
            starvation: Duration::from_secs(60),
            max_in_flight: 1,
            eject_after: 2,
            eject_for: Duration::from_secs(30),
            requests_per_s: None,
            prompt_tokens_per_s: None,
        }
    }

    /// Holds the only place, queues requests of the given sizes, then lets them go one by one
    /// and returns the order they went in.
    async fn order_of(order: Order, sizes: &[u64]) -> Vec<u64> {
        let s = Arc::new(Scheduler::new(cfg(order), 1));
        let first = s.acquire(0).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for &n in sizes {
            let (s, tx) = (Arc::clone(&s), tx.clone());
            tokio::spawn(async move {
                let _slot = s.acquire(n).await;
                tx.send(n).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(first);
        let mut out = Vec::new();
        for _ in sizes {
            out.push(rx.recv().await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn shortest_prefill_goes_first_and_fifo_keeps_arrival_order() {
        assert_eq!(
            order_of(Order::Sjf, &[900, 20, 300, 20]).await,
            [20, 20, 300, 900]
        );
        assert_eq!(
            order_of(Order::Fifo, &[900, 20, 300, 20]).await,
            [900, 20, 300, 20]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_past_the_starvation_limit_goes_first() {
        let s = Arc::new(Scheduler::new(
            ScheduleConfig {
                starvation: Duration::from_millis(5),
                ..cfg(Order::Sjf)
            },
            1,
        ));
        let held = s.acquire(0).await;
        let big = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.acquire(10_000).await.endpoint })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let small = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.acquire(1).await.endpoint })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(held);
        assert_eq!(big.await.unwrap(), 0, "the starved request got the place");
        assert_eq!(small.await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn least_outstanding_endpoint_and_ejection() {
        let s = Scheduler::new(
            ScheduleConfig {
                max_in_flight: 4,
                ..cfg(Order::Sjf)
            },
            2,
        );
        let a = s.acquire(1).await;
        let b = s.acquire(1).await;
        assert_ne!(a.endpoint, b.endpoint, "spread over both endpoints");
        assert_eq!(s.report(1, false), None);
        assert_eq!(s.report(1, false), Some(Duration::from_secs(30)));
        drop((a, b));
        for _ in 0..3 {
            assert_eq!(s.acquire(1).await.endpoint, 0, "endpoint 1 is ejected");
        }
        tokio::time::sleep(Duration::from_secs(31)).await;
        let (c, d) = (s.acquire(1).await, s.acquire(1).await);
        assert_eq!(
            [c.endpoint, d.endpoint].iter().filter(|&&e| e == 1).count(),
            1,
            "back in rotation"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_endpoints_ejected_waits_for_the_first_to_return() {
        let s = Scheduler::new(cfg(Order::Sjf), 1);
        s.eject(0);
        let t0 = Instant::now();
        let slot = s.acquire(1).await;
        assert_eq!(slot.endpoint, 0);
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn governor_holds_requests_and_tokens_per_second() {
        let s = Scheduler::new(
            ScheduleConfig {
                max_in_flight: 100,
                requests_per_s: Some(10.0),
                ..cfg(Order::Sjf)
            },
            1,
        );
        let t0 = Instant::now();
        for _ in 0..30 {
            drop(s.acquire(1).await);
        }
        // A burst of 10 goes at once; the next 20 at 10/s.
        let e = t0.elapsed().as_secs_f64();
        assert!((1.9..2.2).contains(&e), "{e}");

        let s = Scheduler::new(
            ScheduleConfig {
                max_in_flight: 100,
                prompt_tokens_per_s: Some(1000.0),
                ..cfg(Order::Sjf)
            },
            1,
        );
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(s.acquire(1000).await);
        }
        let e = t0.elapsed().as_secs_f64();
        assert!((3.9..4.2).contains(&e), "{e}");
    }
}
