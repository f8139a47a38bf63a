//! The policies' allocator: a bump arena that rewinds once everything allocated during a
//! call has been freed.
//!
//! Written by hand because none of the maintained allocators does this. policy-server
//! evaluates each request in a fresh instance, so a general allocator's free lists are
//! bookkeeping for memory nobody gets to reuse: wasi-libc's dlmalloc took a fifth of the
//! injector's guest time, and talc, swapped in, executed more wasm operators than dlmalloc.
//! Here an allocation is an aligned pointer bump, and a free mostly only counts.
//!
//! Instances that are reused (kwctl, `sidecarctl bench --instance reused`) still get
//! their memory back: wapc-guest frees the payload and the answer before `__guest_call`
//! returns, so the allocations made since `wapc_init` all end with the call, and the arena
//! starts over at the next.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

pub const PAGE: usize = 64 * 1024;
/// Memory is asked for 1 MiB at a time: each `memory.grow` is a call into the host.
const GROW_PAGES: usize = 16;

/// Where the arena's memory comes from.
pub trait Memory {
    /// Grows memory by `pages`; the address the new pages start at, `None` when refused.
    fn grow(&self, pages: usize) -> Option<usize>;
}

pub struct Arena<M> {
    memory: M,
    /// The next free byte, and the end of the memory the arena owns.
    top: Cell<usize>,
    end: Cell<usize>,
    /// Where the latest allocation starts (0: none): freeing or growing it works in place.
    last: Cell<usize>,
    /// Where the calls' allocations start (0 until `wapc_init` is done, and for good once
    /// memory someone else grew lies in the arena's way): what comes before it lives as
    /// long as the instance.
    floor: Cell<usize>,
    /// Allocations at or above `floor` not yet freed.
    live: Cell<usize>,
}

impl<M: Memory> Arena<M> {
    pub const fn new(memory: M) -> Self {
        Arena {
            memory,
            top: Cell::new(0),
            end: Cell::new(0),
            last: Cell::new(0),
            floor: Cell::new(0),
            live: Cell::new(0),
        }
    }

    /// From here on the arena rewinds to this point whenever every allocation made after
    /// it has been freed.
    pub fn calls_start_here(&self) {
        if self.end.get() == 0 && !self.extend(GROW_PAGES) {
            return;
        }
        self.floor.set(self.top.get());
        self.live.set(0);
        self.last.set(0);
    }

    /// Takes more memory, then allocates from it.
    #[cold]
    fn grow(&self, layout: Layout) -> *mut u8 {
        let need = layout.size().saturating_add(layout.align());
        if !self.extend(need.div_ceil(PAGE).max(GROW_PAGES)) {
            return core::ptr::null_mut();
        }
        // SAFETY: the pages just taken hold `layout` with its alignment.
        unsafe { self.alloc(layout) }
    }

    /// Takes `pages` more memory for the arena.
    fn extend(&self, pages: usize) -> bool {
        let Some(base) = self.memory.grow(pages) else {
            return false;
        };
        if base != self.end.get() {
            if self.end.get() != 0 {
                // Memory someone else grew lies between: the arena goes on past it, and
                // must never rewind below it.
                self.floor.set(0);
            }
            self.top.set(base);
            self.last.set(0);
        }
        self.end.set(base.saturating_add(pages * PAGE));
        true
    }
}

unsafe impl<M: Memory> GlobalAlloc for Arena<M> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mask = layout.align() - 1;
        let start = self.top.get().checked_add(mask).map(|t| t & !mask);
        let Some((start, new_top)) = start.and_then(|s| Some((s, s.checked_add(layout.size())?)))
        else {
            return core::ptr::null_mut();
        };
        if new_top > self.end.get() {
            return self.grow(layout);
        }
        self.top.set(new_top);
        self.last.set(start);
        if self.floor.get() != 0 {
            self.live.set(self.live.get() + 1);
        }
        start as *mut u8
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let at = ptr as usize;
        if at == self.last.get() {
            self.top.set(at);
            self.last.set(0);
        }
        let floor = self.floor.get();
        if floor != 0 && at >= floor {
            let live = self.live.get() - 1;
            self.live.set(live);
            if live == 0 {
                self.top.set(floor);
                self.last.set(0);
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let at = ptr as usize;
        let latest = at == self.last.get();
        if new_size <= layout.size() || (latest && new_size <= self.end.get() - at) {
            if latest {
                self.top.set(at + new_size);
            }
            return ptr;
        }
        // SAFETY: the caller guarantees the new size, rounded up to the alignment, fits.
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct, and hold `layout.size()` bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// The allocator of a policy module, over its linear memory.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
mod linear {
    use super::{Arena, Memory, PAGE};

    pub struct LinearMemory;

    impl Memory for LinearMemory {
        fn grow(&self, pages: usize) -> Option<usize> {
            match core::arch::wasm32::memory_grow(0, pages) {
                usize::MAX => None,
                old => Some(old * PAGE),
            }
        }
    }

    // SAFETY: without the atomics feature a wasm module runs on one thread.
    unsafe impl Sync for Arena<LinearMemory> {}

    #[global_allocator]
    pub static ARENA: Arena<LinearMemory> = Arena::new(LinearMemory);
}

#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
pub use linear::ARENA;

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages carved in order from one buffer; `foreign` takes some as another grower of
    /// the linear memory would.
    struct Pages {
        base: usize,
        pages: usize,
        used: Cell<usize>,
    }

    impl Pages {
        fn new(pages: usize) -> Self {
            let layout = Layout::from_size_align(pages * PAGE, PAGE).unwrap();
            // SAFETY: non-zero size. Leaked: the tests' arenas hand it out until exit.
            let base = unsafe { std::alloc::alloc(layout) } as usize;
            assert_ne!(base, 0);
            Pages {
                base,
                pages,
                used: Cell::new(0),
            }
        }

        fn foreign(&self, pages: usize) -> std::ops::Range<usize> {
            let start = self.grow(pages).unwrap();
            start..start + pages * PAGE
        }
    }

    impl Memory for Pages {
        fn grow(&self, pages: usize) -> Option<usize> {
            let used = self.used.get();
            (used + pages <= self.pages).then(|| {
                self.used.set(used + pages);
                self.base + used * PAGE
            })
        }
    }

    fn arena(pages: usize) -> Arena<Pages> {
        Arena::new(Pages::new(pages))
    }

    /// A block filled with its own tag, so overwrites show.
    struct Block {
        at: *mut u8,
        layout: Layout,
        tag: u8,
    }

    fn take(a: &Arena<Pages>, size: usize, align: usize, tag: u8) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        let at = unsafe { a.alloc(layout) };
        assert!(!at.is_null(), "{size} bytes");
        assert_eq!(at as usize % align, 0);
        unsafe { at.write_bytes(tag, size) };
        Block { at, layout, tag }
    }

    fn intact(b: &Block) -> bool {
        let bytes = unsafe { std::slice::from_raw_parts(b.at, b.layout.size()) };
        bytes.iter().all(|&x| x == b.tag)
    }

    fn give(a: &Arena<Pages>, b: Block) {
        assert!(intact(&b), "block {} overwritten", b.tag);
        unsafe { a.dealloc(b.at, b.layout) };
    }

    fn resize(a: &Arena<Pages>, b: &mut Block, size: usize) {
        assert!(intact(b));
        let at = unsafe { a.realloc(b.at, b.layout, size) };
        assert!(!at.is_null());
        let kept = b.layout.size().min(size);
        assert!(
            unsafe { std::slice::from_raw_parts(at, kept) }
                .iter()
                .all(|&x| x == b.tag)
        );
        b.at = at;
        b.layout = Layout::from_size_align(size, b.layout.align()).unwrap();
        unsafe { at.write_bytes(b.tag, size) };
    }

    /// One waPC call as wapc-guest makes it: the payload, the policy's work, the answer,
    /// then the payload and the answer freed. Returns where the payload went.
    fn call(a: &Arena<Pages>, work: impl FnOnce(&Arena<Pages>)) -> usize {
        let payload = take(a, 3000, 1, 1);
        let at = payload.at as usize;
        work(a);
        let answer = take(a, 500, 1, 2);
        give(a, payload);
        give(a, answer);
        at
    }

    #[test]
    fn a_call_gives_back_everything_it_allocated() {
        let a = arena(64);
        let kept = take(&a, 100, 8, 9);
        a.calls_start_here();
        let work = |a: &Arena<Pages>| {
            let mut list = take(a, 16, 8, 3);
            let strings: Vec<Block> = (0..50).map(|i| take(a, 10 + i, 1, 4)).collect();
            for size in [32, 64, 128, 4096, 70_000] {
                resize(a, &mut list, size);
            }
            for s in strings.into_iter().rev() {
                give(a, s);
            }
            give(a, list);
        };
        let first = call(&a, work);
        assert_eq!(a.top.get(), a.floor.get(), "rewound after the call");
        for _ in 0..100 {
            assert_eq!(
                call(&a, work),
                first,
                "each call starts where the first did"
            );
        }
        assert!(intact(&kept), "wapc_init's allocation survives the calls");
        assert!(a.memory.used.get() <= 16 + 2, "calls reuse the memory");
    }

    #[test]
    fn the_latest_block_grows_and_shrinks_in_place() {
        let a = arena(64);
        a.calls_start_here();
        let mut b = take(&a, 8, 4, 5);
        let at = b.at;
        resize(&a, &mut b, 1000);
        resize(&a, &mut b, 40);
        assert_eq!(b.at, at);
        assert_eq!(a.top.get(), at as usize + 40);
        let other = take(&a, 8, 4, 6);
        resize(&a, &mut b, 2000);
        assert_ne!(b.at, at, "moved once another block follows it");
        give(&a, other);
        give(&a, b);
        assert_eq!(a.top.get(), a.floor.get());
    }

    #[test]
    fn random_allocations_never_overlap_and_keep_their_bytes() {
        let a = arena(2048);
        a.calls_start_here();
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = |n: usize| rng.usize(..n);
        let mut live: Vec<Block> = Vec::new();
        for step in 0..20_000 {
            match next(10) {
                0..=4 => {
                    let size = [1, 7, 24, 100, 3000, 70_000][next(6)];
                    let align = [1, 2, 8, 16, 4096][next(5)];
                    live.push(take(&a, size, align, (step % 250) as u8 + 1));
                }
                5 | 6 if !live.is_empty() => {
                    let i = next(live.len());
                    give(&a, live.swap_remove(i));
                }
                7 if !live.is_empty() => {
                    let i = next(live.len());
                    let size = [3, 50, 5000, 90_000][next(4)];
                    resize(&a, &mut live[i], size);
                }
                8 if next(50) == 0 => {
                    // A call ends: everything goes, and the arena is back at its floor.
                    for b in live.drain(..) {
                        give(&a, b);
                    }
                    assert_eq!(a.top.get(), a.floor.get());
                }
                _ => {}
            }
            let mut spans: Vec<(usize, usize)> = live
                .iter()
                .map(|b| (b.at as usize, b.at as usize + b.layout.size()))
                .collect();
            spans.sort();
            assert!(
                spans.windows(2).all(|w| w[0].1 <= w[1].0),
                "overlap at {step}"
            );
        }
        for b in live {
            give(&a, b);
        }
    }

    #[test]
    fn memory_someone_else_grew_is_never_handed_out() {
        let a = arena(64);
        a.calls_start_here();
        let first = take(&a, 1000, 8, 7);
        let foreign = a.memory.foreign(2);
        let big = take(&a, GROW_PAGES * PAGE, 8, 8);
        assert!(big.at as usize >= foreign.end);
        give(&a, first);
        give(&a, big);
        for (i, size) in [20_000, 500_000, GROW_PAGES * PAGE + 1]
            .into_iter()
            .enumerate()
        {
            let b = take(&a, size, 8, i as u8 + 1);
            let span = b.at as usize..b.at as usize + size;
            assert!(span.end <= foreign.start || span.start >= foreign.end);
            give(&a, b);
        }
    }

    #[test]
    fn the_latest_block_moves_rather_than_grow_past_the_arena() {
        let a = arena(64);
        a.calls_start_here();
        let mut b = take(&a, 100, 8, 3);
        let foreign = a.memory.foreign(2);
        resize(&a, &mut b, GROW_PAGES * PAGE + 1);
        assert!(
            b.at as usize >= foreign.end,
            "not into the pages after the arena"
        );
        give(&a, b);
    }

    #[test]
    fn memory_running_out_is_a_null_pointer_not_a_trap() {
        let a = arena(GROW_PAGES);
        let layout = Layout::from_size_align(GROW_PAGES * PAGE, 1).unwrap();
        assert!(unsafe { a.alloc(layout) }.is_null(), "more than there is");
        let small = take(&a, 100, 1, 1);
        assert!(intact(&small));
        let huge = Layout::from_size_align(usize::MAX / 2, 1).unwrap();
        assert!(unsafe { a.alloc(huge) }.is_null());
    }
}
