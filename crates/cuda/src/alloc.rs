//! Device memory with accounting: every allocation the backend makes is a `DeviceBuffer`, which
//! adds its bytes to one `MemTracker` when created and subtracts them when dropped, so
//! `Backend::memory()` reports current and peak bytes exactly as the seed engine measured them
//! (the allocator's high-water mark), cuBLAS's workspace included (the device gives it one).
//!
//! Key design choice: buffers expose raw device pointers (`ptr()`), and kernels receive plain
//! pointers and sizes. cudarc's per-buffer event tracking is switched off (one stream), so taking
//! a pointer costs nothing and a decode step can later be captured as a CUDA graph.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};
use peregrine_core::MemoryStats;

/// Current and peak bytes of device memory held through `DeviceBuffer`s.
#[derive(Debug, Default)]
pub struct MemTracker {
    current: AtomicU64,
    peak: AtomicU64,
}

impl MemTracker {
    fn add(&self, bytes: u64) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, bytes: u64) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }
    pub fn stats(&self) -> MemoryStats {
        MemoryStats { current_bytes: self.current.load(Ordering::Relaxed), peak_bytes: self.peak.load(Ordering::Relaxed) }
    }
    /// Start a new high-water mark at the current use.
    pub fn reset_peak(&self) {
        self.peak.store(self.current.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// `len` elements of `T` on the device, counted by a `MemTracker` while alive.
pub struct DeviceBuffer<T> {
    /// At least one element, so an empty buffer still has a valid pointer.
    slice: CudaSlice<T>,
    len: usize,
    tracker: Arc<MemTracker>,
    _t: PhantomData<T>,
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    pub(crate) fn new(slice: CudaSlice<T>, len: usize, tracker: Arc<MemTracker>) -> Self {
        tracker.add(slice.num_bytes() as u64);
        DeviceBuffer { slice, len, tracker, _t: PhantomData }
    }
}

impl<T> DeviceBuffer<T> {
    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        self.slice.num_bytes()
    }
    /// The raw device address of element 0.
    pub fn ptr(&self) -> u64 {
        let (p, _sync) = self.slice.device_ptr(self.slice.stream());
        p
    }
    /// The raw device address of element `offset` (not checked: callers check ranges first).
    pub fn ptr_at(&self, offset: usize) -> u64 {
        self.ptr() + (offset * std::mem::size_of::<T>()) as u64
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        self.tracker.sub(self.slice.num_bytes() as u64);
    }
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer<{}>[{}]", std::any::type_name::<T>(), self.len)
    }
}
