//! The shim's allocator: power-of-two size classes carved from one static arena, with a free
//! list per class. The shim lives for a millisecond and then execs runc, so it needs no more
//! than that: no `mmap`/`munmap` per allocation (musl's allocator makes about 70 of them in one
//! create), no returning memory, and only the arena pages it touches are ever faulted in.
//! Anything larger than the biggest class, more aligned than a page, or beyond the arena goes
//! to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};

/// Smallest block: 16 bytes (class 0).
const MIN_SHIFT: u32 = 4;
/// Classes 16 B ..= 1 MiB.
const CLASSES: usize = 17;
const PAGE: usize = 4096;

/// A size-class allocator over `N` bytes of its own.
pub struct Arena<const N: usize> {
    lock: AtomicBool,
    inner: UnsafeCell<Inner<N>>,
}

#[repr(C, align(4096))]
struct Inner<const N: usize> {
    mem: [u8; N],
    next: usize,
    free: [*mut u8; CLASSES],
}

// SAFETY: every access to `inner` happens under `lock`.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// An empty arena (all zero: in a static it lives in .bss and costs nothing until used).
    pub const fn new() -> Self {
        Arena {
            lock: AtomicBool::new(false),
            inner: UnsafeCell::new(Inner { mem: [0; N], next: 0, free: [null_mut(); CLASSES] }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner<N>) -> T) -> T {
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference.
        let r = f(unsafe { &mut *self.inner.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    fn owns(&self, p: *mut u8) -> bool {
        let start = self.inner.get() as usize;
        (start..start + N).contains(&(p as usize))
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a layout, or None when the system allocator takes it.
fn class(l: Layout) -> Option<usize> {
    if l.align() > PAGE {
        return None;
    }
    let size = l.size().max(l.align()).max(1 << MIN_SHIFT).next_power_of_two();
    let c = (size.trailing_zeros() - MIN_SHIFT) as usize;
    (c < CLASSES).then_some(c)
}

impl<const N: usize> Inner<N> {
    fn alloc(&mut self, c: usize) -> *mut u8 {
        let head = self.free[c];
        if !head.is_null() {
            // SAFETY: a free block holds the next free block's address in its first word.
            self.free[c] = unsafe { *(head as *mut *mut u8) };
            return head;
        }
        let size = 16usize << c;
        let align = size.min(PAGE);
        let at = (self.next + align - 1) & !(align - 1);
        if at + size > N {
            return null_mut();
        }
        self.next = at + size;
        // SAFETY: `at + size <= N`, inside `mem`.
        unsafe { self.mem.as_mut_ptr().add(at) }
    }

    fn free(&mut self, p: *mut u8, c: usize) {
        // SAFETY: blocks are at least 16 bytes and 16-aligned: room for one pointer.
        unsafe { *(p as *mut *mut u8) = self.free[c] };
        self.free[c] = p;
    }
}

// SAFETY: blocks are handed out once until freed, sized and aligned for their class (a class
// is at least the layout's size and alignment, and blocks are aligned to their size up to a
// page); foreign pointers go back to `System`.
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = class(l).map(|c| self.with(|a| a.alloc(c))).unwrap_or(null_mut());
        if p.is_null() {
            // SAFETY: forwarded as given.
            unsafe { System.alloc(l) }
        } else {
            p
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        match class(l) {
            Some(c) if self.owns(p) => self.with(|a| a.free(p, c)),
            // SAFETY: not ours, so System's.
            _ => unsafe { System.dealloc(p, l) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `l.align()` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
        let ours = self.owns(p);
        if ours && class(l) == class(new) {
            return p;
        }
        if !ours && class(new).is_none() {
            // System's block staying System's (too big or too aligned for a class).
            // SAFETY: forwarded as given.
            return unsafe { System.realloc(p, l, new_size) };
        }
        // SAFETY: GlobalAlloc's contract, forwarded.
        unsafe {
            let q = self.alloc(new);
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
                self.dealloc(p, l);
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_size_and_alignment() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 8)), Some(1));
        assert_eq!(class(layout(8, 64)), Some(2), "alignment decides");
        assert_eq!(class(layout(1 << 20, 8)), Some(16));
        assert_eq!(class(layout((1 << 20) + 1, 8)), None, "too big: the system's");
        assert_eq!(class(layout(8, 8192)), None, "above a page of alignment: the system's");
    }

    #[test]
    fn blocks_are_aligned_distinct_reused_and_overflow_to_the_system() {
        let a: Box<Arena<{ 64 * 1024 }>> = Box::default();
        unsafe {
            let x = a.alloc(layout(24, 8));
            let y = a.alloc(layout(24, 8));
            let z = a.alloc(layout(100, 64));
            assert!(a.owns(x) && a.owns(y) && a.owns(z));
            assert_ne!(x, y);
            assert_eq!(z as usize % 64, 0);
            x.write_bytes(0xaa, 24);
            y.write_bytes(0xbb, 24);
            assert_eq!(*x.add(23), 0xaa, "blocks do not overlap");
            a.dealloc(x, layout(24, 8));
            assert_eq!(a.alloc(layout(30, 8)), x, "a freed block is reused for its class");
            // Growing within a class keeps the block; across classes copies.
            assert_eq!(a.realloc(y, layout(24, 8), 32), y);
            let g = a.realloc(y, layout(32, 8), 200);
            assert_ne!(g, y);
            assert_eq!(*g.add(23), 0xbb, "contents kept");
            // Arena full: the system allocator, freed back to it.
            let blocks: Vec<*mut u8> = (0..4).map(|_| a.alloc(layout(16 * 1024, 8))).collect();
            assert!(blocks.iter().filter(|b| a.owns(**b)).count() >= 2, "some fit");
            let outside: Vec<&*mut u8> = blocks.iter().filter(|b| !a.owns(**b)).collect();
            assert!(!outside.is_empty(), "the 64 KiB arena is full by then");
            for b in &blocks {
                assert!(!b.is_null());
                a.dealloc(*b, layout(16 * 1024, 8));
            }
            // Too big for a class: the system's, grown in place there.
            let huge = a.alloc(layout(2 << 20, 8));
            assert!(!huge.is_null() && !a.owns(huge));
            huge.write_bytes(0x5a, 16);
            let grown = a.realloc(huge, layout(2 << 20, 8), 3 << 20);
            assert!(!a.owns(grown) && *grown.add(15) == 0x5a);
            a.dealloc(grown, layout(3 << 20, 8));
        }
    }
}
