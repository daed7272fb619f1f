//! Whose turn it is to call the upstream: the fair-share scheduler behind
//! [`super::slots::Slots`] (SPEC §7 "Fair share", v3).
//!
//! Invariants:
//! - At most `total` slots are held at once, at most a widget's `share` by
//!   that widget (its bulkhead), and at most `total - total / 4` by one
//!   client address: a quarter of the slots is always left to the others.
//! - A slot given back goes to a waiter, chosen in this order: requests
//!   that need data ([`Class::Foreground`]) before prewarm and background
//!   refreshes; within a class, round-robin across client addresses, then
//!   across the users of that address; within a user, first come first
//!   served. A waiter whose widget is at its share is passed over (it cannot
//!   use the slot), not made to block the others.
//! - After every hand-out, no waiter could take a free slot: so a newcomer
//!   with a free slot and a free share takes it at once.
//!
//! Why not FIFO (a semaphore): one address forcing refreshes for hundreds of
//! users queued ahead of everyone, and another address's cold widget waited
//! behind all of them (issue 25: 3.9 s instead of 2 s with 320 users). Why a
//! per-address share besides the turns: calls cannot be pre-empted, so with
//! every slot held by a flood of slow calls a newcomer would still wait for
//! the first of them to end; the share keeps slots free for it. (Behind a
//! proxy that is not in `--trusted-proxies`, every client is one address:
//! they then share three quarters of the slots, in turns by user.)
//!
//! A slot is handed over through a oneshot channel carrying the [`Turn`]
//! guard itself: if the waiter gave up (its deadline, its request gone) the
//! guard comes back or is dropped with the channel, and either way the slot
//! returns. Every map here is bounded by the fetches in flight (one waiter
//! per fetch), and emptied entries are removed at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Who a fetch is for, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Requester {
    /// What the fetch is for: its class, and whether it waits in the
    /// prewarm queue (`--prewarm-queue`) rather than for a request's deadline.
    pub work: Work,
    /// The client address of the request that started the fetch (a
    /// prewarm: its sign-in's); `None` for work of the server's own.
    pub address: Option<IpAddr>,
    /// The user the fetch is for (their tag: no name kept here).
    pub user: Arc<str>,
    /// Set when a request comes to need this background fetch's data: it
    /// then waits as a request does ([`Class::Foreground`]).
    pub urgency: Option<Arc<Urgency>>,
}

impl Requester {
    /// The same requester, waiting as a request does.
    pub fn as_request(&self) -> Self {
        Self {
            work: Work::Request,
            ..self.clone()
        }
    }
}

/// Whether a background fetch has become urgent: a request joined it.
#[derive(Debug, Default)]
pub struct Urgency {
    urgent: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Urgency {
    /// A request now waits for this fetch.
    pub fn raise(&self) {
        self.urgent.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether a request waits for this fetch.
    pub fn is_raised(&self) -> bool {
        self.urgent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`Urgency::raise`] was called.
    pub async fn raised(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// What a fetch is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A request waits for it.
    Request,
    /// A refresh nobody waits for (stale, eager, an open page's).
    Refresh,
    /// A sign-in's prewarm: queued (`--prewarm-queue`) until a slot is free.
    Prewarm,
}

impl Work {
    /// The class its turns are taken in.
    pub fn class(self) -> Class {
        match self {
            Work::Request => Class::Foreground,
            Work::Refresh | Work::Prewarm => Class::Background,
        }
    }
}

/// The two classes of upstream work, in the order they are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request waits for this data.
    Foreground = 0,
    /// Prewarm, background and eager refreshes: nobody waits.
    Background = 1,
}

tokio::task_local! {
    /// The client address of the request being served, set by the routes
    /// around each handler so that the fetches it starts carry it.
    static CLIENT: IpAddr;
}

/// Runs `fut` as serving a request from `address`.
pub async fn serving<F: std::future::Future>(address: IpAddr, fut: F) -> F::Output {
    CLIENT.scope(address, fut).await
}

/// The client address of the request being served, if any.
pub fn client() -> Option<IpAddr> {
    CLIENT.try_with(|a| *a).ok()
}

/// One waiter: its widget, and where its slot is sent.
struct Waiter {
    widget: usize,
    tx: oneshot::Sender<Turn>,
}

/// A user's waiters, first come first served.
struct UserQueue {
    user: Arc<str>,
    waiters: VecDeque<Waiter>,
}

/// An address's users, in turn.
struct AddressQueue {
    address: Option<IpAddr>,
    users: VecDeque<UserQueue>,
}

struct State {
    free: usize,
    free_share: Vec<usize>,
    /// Slots most one address may hold.
    address_share: usize,
    /// Slots held per address (entries at zero are removed).
    held_by: HashMap<Option<IpAddr>, usize>,
    /// Per class, the addresses in turn.
    waiting: [VecDeque<AddressQueue>; 2],
}

/// The slots and their waiters.
pub struct Turns {
    state: Mutex<State>,
}

/// The right to make one upstream call of a widget, given back when dropped.
pub struct Turn {
    turns: Option<Arc<Turns>>,
    widget: usize,
    address: Option<IpAddr>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.give_back(self.widget, self.address);
        }
    }
}

/// Why no turn was had.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The deadline passed while waiting.
    Timeout,
    /// The scheduler is gone.
    Abandoned,
}

impl Turns {
    /// `total` slots, each of `widgets` widgets holding at most `share`.
    pub fn new(total: usize, widgets: usize, share: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: total,
                free_share: vec![share; widgets.max(1)],
                address_share: (total - total / 4).max(1),
                held_by: HashMap::new(),
                waiting: [VecDeque::new(), VecDeque::new()],
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Slots free right now, in all.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Waiters right now, in all.
    pub fn waiting(&self) -> usize {
        let state = self.lock();
        state
            .waiting
            .iter()
            .flatten()
            .flat_map(|a| &a.users)
            .map(|u| u.waiters.len())
            .sum()
    }

    /// A slot for `widget` now, if one is free (it never waits), for work
    /// of the server's own.
    pub fn try_take(self: &Arc<Self>, widget: usize) -> Option<Turn> {
        let mut state = self.lock();
        let widget = widget.min(state.free_share.len() - 1);
        state.take(widget, None).then(|| self.turn(widget, None))
    }

    /// A slot for `widget`, in `who`'s turn, waiting until `deadline`.
    /// `waited` is told, when it must wait, whether its widget's share
    /// (rather than the total) was what was full.
    pub async fn take(
        self: &Arc<Self>,
        widget: usize,
        who: &Requester,
        deadline: tokio::time::Instant,
        waited: impl FnOnce(bool),
    ) -> Result<Turn, Refused> {
        let rx = {
            let mut state = self.lock();
            let widget = widget.min(state.free_share.len() - 1);
            if state.take(widget, who.address) {
                return Ok(self.turn(widget, who.address));
            }
            waited(state.free_share[widget] == 0);
            let (tx, rx) = oneshot::channel();
            state.enqueue(who, Waiter { widget, tx });
            rx
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(turn)) => Ok(turn),
            Ok(Err(_)) => Err(Refused::Abandoned),
            // Our entry stays queued with a closed channel: the next hand-out
            // passes over it and drops it.
            Err(_) => Err(Refused::Timeout),
        }
    }

    fn turn(self: &Arc<Self>, widget: usize, address: Option<IpAddr>) -> Turn {
        Turn {
            turns: Some(Arc::clone(self)),
            widget,
            address,
        }
    }

    /// A slot of `widget` held by `address` comes back: hand it (and any
    /// other free slot) out.
    fn give_back(self: &Arc<Self>, widget: usize, address: Option<IpAddr>) {
        let mut state = self.lock();
        state.put_back(widget, address);
        while let Some((waiter, address)) = state.next_waiter() {
            // Counted as taken before it is sent; a waiter that gave up
            // sends it back here, disarmed, and the count is restored.
            let turn = self.turn(waiter.widget, address);
            if let Err(mut back) = waiter.tx.send(turn) {
                back.turns = None;
                state.put_back(waiter.widget, address);
            }
        }
        for ring in &mut state.waiting {
            ring.retain(|a| !a.users.is_empty());
        }
    }
}

impl State {
    /// Whether `address` may hold one more slot.
    fn address_may(&self, address: Option<IpAddr>) -> bool {
        self.held_by.get(&address).copied().unwrap_or(0) < self.address_share
    }

    /// Takes a slot of `widget` for `address` if the total and both shares allow.
    fn take(&mut self, widget: usize, address: Option<IpAddr>) -> bool {
        if self.free > 0 && self.free_share[widget] > 0 && self.address_may(address) {
            self.taken(widget, address);
            true
        } else {
            false
        }
    }

    fn taken(&mut self, widget: usize, address: Option<IpAddr>) {
        self.free -= 1;
        self.free_share[widget] -= 1;
        *self.held_by.entry(address).or_insert(0) += 1;
    }

    fn put_back(&mut self, widget: usize, address: Option<IpAddr>) {
        self.free += 1;
        if let Some(share) = self.free_share.get_mut(widget) {
            *share += 1;
        }
        if let Some(held) = self.held_by.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                self.held_by.remove(&address);
            }
        }
    }

    fn enqueue(&mut self, who: &Requester, waiter: Waiter) {
        let ring = &mut self.waiting[who.work.class() as usize];
        let address = match ring.iter_mut().position(|a| a.address == who.address) {
            Some(i) => &mut ring[i],
            None => {
                ring.push_back(AddressQueue {
                    address: who.address,
                    users: VecDeque::new(),
                });
                ring.back_mut().expect("just pushed")
            }
        };
        match address.users.iter_mut().find(|u| u.user == who.user) {
            Some(user) => user.waiters.push_back(waiter),
            None => address.users.push_back(UserQueue {
                user: Arc::clone(&who.user),
                waiters: VecDeque::from([waiter]),
            }),
        }
    }

    /// The next waiter whose turn it is and who can use a free slot, taken
    /// out of the queues with its slot counted as taken; the address and
    /// user it came from go to the back of their rings.
    fn next_waiter(&mut self) -> Option<(Waiter, Option<IpAddr>)> {
        if self.free == 0 {
            return None;
        }
        for class in 0..self.waiting.len() {
            for a in 0..self.waiting[class].len() {
                let address = self.waiting[class][a].address;
                if !self.address_may(address) {
                    continue;
                }
                for u in 0..self.waiting[class][a].users.len() {
                    let user = &mut self.waiting[class][a].users[u];
                    // Waiters that gave up are dropped on the way.
                    user.waiters.retain(|w| !w.tx.is_closed());
                    let share = &self.free_share;
                    let Some(i) = user.waiters.iter().position(|w| share[w.widget] > 0) else {
                        continue;
                    };
                    let waiter = user.waiters.remove(i).expect("found above");
                    self.taken(waiter.widget, address);
                    self.rotate(class, a, u);
                    return Some((waiter, address));
                }
                self.prune(class, a);
            }
        }
        None
    }

    /// Sends address `a` and its user `u` to the back of their rings (their
    /// turn was had), dropping them when they have nobody left waiting.
    fn rotate(&mut self, class: usize, a: usize, u: usize) {
        let ring = &mut self.waiting[class];
        let Some(mut address) = ring.remove(a) else { return };
        if let Some(user) = address.users.remove(u) {
            if !user.waiters.is_empty() {
                address.users.push_back(user);
            }
        }
        if !address.users.is_empty() {
            ring.push_back(address);
        }
    }

    /// Drops the users of address `a` with nobody left waiting (only ones
    /// whose waiters all gave up; the address itself stays in its place).
    fn prune(&mut self, class: usize, a: usize) {
        if let Some(address) = self.waiting[class].get_mut(a) {
            address.users.retain(|u| !u.waiters.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn who(work: Work, address: &str, user: &str) -> Requester {
        Requester {
            work,
            address: Some(address.parse().unwrap()),
            user: Arc::from(user),
            urgency: None,
        }
    }

    fn later() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(3600)
    }

    /// Queues `who` for `widget`, returning its pending take.
    fn queue(
        turns: &Arc<Turns>,
        widget: usize,
        who: Requester,
    ) -> tokio::task::JoinHandle<Result<Turn, Refused>> {
        let turns = Arc::clone(turns);
        tokio::spawn(async move { turns.take(widget, &who, later(), |_| {}).await })
    }

    /// Lets every spawned task run until it waits.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// The order in which queued takes are served, one slot at a time.
    async fn served_in_turn(
        turns: &Arc<Turns>,
        held: Turn,
        mut queued: Vec<(&'static str, tokio::task::JoinHandle<Result<Turn, Refused>>)>,
    ) -> Vec<&'static str> {
        let mut order = Vec::new();
        let mut holding = held;
        while !queued.is_empty() {
            drop(holding);
            settle().await;
            let i = queued
                .iter()
                .position(|(_, h)| h.is_finished())
                .expect("a waiter was served");
            let (name, handle) = queued.remove(i);
            assert!(
                queued.iter().all(|(_, h)| !h.is_finished()),
                "one slot serves one waiter"
            );
            holding = handle.await.unwrap().expect("a turn");
            order.push(name);
        }
        drop(holding);
        assert_eq!(turns.available(), 1);
        order
    }

    #[tokio::test(start_paused = true)]
    async fn turns_go_round_robin_across_addresses_then_users() {
        let turns = Turns::new(1, 5, 1);
        let held = turns.try_take(0).unwrap();
        let fg = Work::Request;
        // One address floods with three users' fetches (widgets 1 to 3)
        // before another address's one user asks.
        let mut queued = Vec::new();
        for (name, user, widget) in [("a1", "ann", 1), ("a2", "ann", 2), ("b1", "bob", 3)] {
            queued.push((name, queue(&turns, widget, who(fg, "127.0.0.1", user))));
            settle().await;
        }
        queued.push(("c1", queue(&turns, 4, who(fg, "127.0.0.2", "cat"))));
        settle().await;
        assert_eq!(turns.waiting(), 4);

        let order = served_in_turn(&turns, held, queued).await;

        // Address .1 (ann), then .2 (cat), then .1 again (bob, ann's
        // neighbour in turn), then ann's second.
        assert_eq!(order, ["a1", "c1", "b1", "a2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_need_data_go_before_background_work() {
        let turns = Turns::new(1, 5, 1);
        let held = turns.try_take(0).unwrap();
        let mut queued = Vec::new();
        queued.push((
            "prewarm",
            queue(&turns, 1, who(Work::Refresh, "127.0.0.1", "ann")),
        ));
        settle().await;
        queued.push((
            "request",
            queue(&turns, 2, who(Work::Request, "127.0.0.9", "bob")),
        ));
        settle().await;

        let order = served_in_turn(&turns, held, queued).await;

        assert_eq!(order, ["request", "prewarm"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_at_its_widgets_share_is_passed_over_not_waited_for() {
        // 2 slots, a share of 1: widget 0 holds its share, widget 1 a slot.
        let turns = Turns::new(2, 3, 1);
        let zero = turns.try_take(0).unwrap();
        let one = turns.try_take(1).unwrap();
        assert!(turns.try_take(2).is_none(), "no slot left");
        let blocked = queue(&turns, 0, who(Work::Request, "127.0.0.1", "ann"));
        settle().await;
        let other = queue(&turns, 2, who(Work::Request, "127.0.0.1", "ann"));
        settle().await;

        // Widget 1's slot comes back: widget 0 is still at its share, so
        // the slot goes to the waiter behind it.
        drop(one);
        settle().await;
        assert!(!blocked.is_finished());
        assert!(other.is_finished(), "widget 2 took the free slot");
        drop(zero);
        settle().await;
        assert!(blocked.is_finished());
        drop(other.await.unwrap().unwrap());
        drop(blocked.await.unwrap().unwrap());
        assert_eq!(turns.available(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_holds_at_most_three_quarters_of_the_slots() {
        let turns = Turns::new(8, 8, 8);
        let flood = who(Work::Request, "127.0.0.1", "ann");
        let deadline = tokio::time::Instant::now();
        let mut held = Vec::new();
        for widget in 0..6 {
            held.push(
                turns
                    .take(widget, &flood, deadline, |_| {})
                    .await
                    .expect("within its share"),
            );
        }
        let seventh = turns.take(6, &flood, deadline, |_| {}).await;
        assert_eq!(
            seventh.err(),
            Some(Refused::Timeout),
            "6 of 8 is the address's share"
        );
        let other = who(Work::Request, "127.0.0.2", "bob");
        let now = turns.take(7, &other, deadline, |_| {}).await;
        assert!(now.is_ok(), "another address finds a slot free at once");
        assert_eq!(turns.available(), 1);
        drop(held);
        drop(now);
        assert_eq!(turns.available(), 8);
        assert!(
            turns.lock().held_by.is_empty(),
            "no entry kept for an address holding nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gave_up_returns_its_slot_and_leaves_no_entry() {
        let turns = Turns::new(1, 2, 1);
        let held = turns.try_take(0).unwrap();
        let at = tokio::time::Instant::now() + Duration::from_millis(50);
        let who = who(Work::Request, "127.0.0.1", "ann");
        let gave_up = turns.take(1, &who, at, |_| {}).await;
        assert_eq!(gave_up.err(), Some(Refused::Timeout));
        let next = queue(&turns, 1, who.clone());
        settle().await;

        drop(held);
        settle().await;

        assert!(next.is_finished(), "the live waiter was served");
        drop(next.await.unwrap().unwrap());
        assert_eq!(turns.waiting(), 0, "the dead entry is gone");
        assert_eq!(turns.available(), 1, "no slot was lost");
    }

    #[tokio::test(start_paused = true)]
    async fn a_served_turn_dropped_before_it_is_read_comes_back() {
        let turns = Turns::new(1, 1, 1);
        let held = turns.try_take(0).unwrap();
        let pending = queue(&turns, 0, who(Work::Request, "127.0.0.1", "ann"));
        settle().await;
        pending.abort();
        drop(held);
        settle().await;
        assert_eq!(turns.available(), 1);
        assert!(turns.try_take(0).is_some());
    }
}
