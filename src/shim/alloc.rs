//! The shim's allocator: power-of-two size classes carved from one static arena, with a free
//! list per class. The shim lives for a millisecond and then execs runc, so it needs no more
//! than that: no `mmap`/`munmap` per allocation (musl's allocator makes about 70 of them in one
//! create), no returning memory, and only the arena pages it touches are ever faulted in.
//! Anything larger than the biggest class, more aligned than a page, or beyond the arena goes
//! to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Smallest block: 16 bytes (class 0).
const MIN_SHIFT: u32 = 4;
/// Classes 16 B ..= 1 MiB.
const CLASSES: usize = 17;
const PAGE: usize = 4096;

/// A size-class allocator over `N` bytes of its own.
pub struct Arena<const N: usize> {
    lock: AtomicBool,
    books: UnsafeCell<Books>,
    /// The blocks. Never reached through a reference, only through the raw pointers handed out
    /// (a reference to the whole arena would claim the blocks the program is using).
    mem: UnsafeCell<Mem<N>>,
}

#[repr(C, align(4096))]
struct Mem<const N: usize>([u8; N]);

/// What is handed out: the bump offset, and each class's free list (offset + 1 of its first
/// block, 0 for none, so that an empty arena is all zero).
struct Books {
    next: usize,
    free: [usize; CLASSES],
}

// SAFETY: no safe equivalent (the arena is one static shared by every thread, written through
// `UnsafeCell`): the bookkeeping is only touched under `lock`, a block's bytes only by whoever
// it was handed to, or, once given back, by the free list under the lock.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// An empty arena (all zero: in a static it lives in .bss and costs nothing until used).
    pub const fn new() -> Self {
        Arena {
            lock: AtomicBool::new(false),
            books: UnsafeCell::new(Books { next: 0, free: [0; CLASSES] }),
            mem: UnsafeCell::new(Mem([0; N])),
        }
    }

    fn base(&self) -> *mut u8 {
        self.mem.get().cast()
    }

    fn owns(&self, p: *mut u8) -> bool {
        (p as usize).wrapping_sub(self.base() as usize) < N
    }

    /// A block of class `c`, or null when the arena has no room for it.
    fn take(&self, c: usize) -> *mut u8 {
        self.with(|books| {
            let head = books.free[c];
            if head != 0 {
                let block = self.base().wrapping_add(head - 1);
                // SAFETY: no safe equivalent (the link is kept in the free block itself, which
                // nobody else holds): a free block holds the next one's offset + 1 in its first
                // word, and blocks are at least 16 bytes and 16-aligned.
                books.free[c] = unsafe { block.cast::<usize>().read() };
                return block;
            }
            let size = 16usize << c;
            let align = size.min(PAGE);
            let at = (books.next + align - 1) & !(align - 1);
            if at + size > N {
                return std::ptr::null_mut();
            }
            books.next = at + size;
            self.base().wrapping_add(at)
        })
    }

    /// Puts back a block of class `c` that this arena handed out.
    fn give_back(&self, p: *mut u8, c: usize) {
        self.with(|books| {
            // SAFETY: as in `take`: the block is ours again, room for one word.
            unsafe { p.cast::<usize>().write(books.free[c]) };
            books.free[c] = p as usize - self.base() as usize + 1;
        })
    }

    /// `f` on the bookkeeping, under the lock.
    fn with<T>(&self, f: impl FnOnce(&mut Books) -> T) -> T {
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
        }
        // SAFETY: no safe equivalent at this cost (a `std::sync::Mutex`, with its poisoning,
        // adds 8% to the instructions of a create); the lock is held, so this is the only
        // reference.
        let r = f(unsafe { &mut *self.books.get() });
        self.lock.store(false, Ordering::Release);
        r
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

// SAFETY: no safe equivalent (a global allocator is an unsafe trait): blocks are handed out
// once until freed, sized and aligned for their class (a class is at least the layout's size
// and alignment, and blocks are aligned to their size up to a page); foreign pointers go back
// to `System`.
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = class(l).map(|c| self.take(c)).unwrap_or(std::ptr::null_mut());
        if p.is_null() {
            // SAFETY: no safe equivalent; forwarded as given.
            unsafe { System.alloc(l) }
        } else {
            p
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        match class(l) {
            Some(c) if self.owns(p) => self.give_back(p, c),
            // SAFETY: no safe equivalent; not ours, so System's.
            _ => unsafe { System.dealloc(p, l) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // The caller guarantees `new_size` with `l.align()` is a valid layout.
        let Ok(new) = Layout::from_size_align(new_size, l.align()) else {
            return std::ptr::null_mut();
        };
        let ours = self.owns(p);
        if ours && class(l) == class(new) {
            return p;
        }
        if !ours && class(new).is_none() {
            // System's block staying System's (too big or too aligned for a class).
            // SAFETY: no safe equivalent; forwarded as given.
            return unsafe { System.realloc(p, l, new_size) };
        }
        // SAFETY: no safe equivalent; GlobalAlloc's contract, forwarded: `p` holds `l.size()`
        // bytes, and the new block does not overlap it.
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
