//! Pinned staging for batch uploads (see the [parent module](super)).

use super::*;

/// One pinned staging buffer and the event marking the end of the last copy out of it.
pub(super) struct StagingSlot {
    pub(super) host: Option<PinnedHostSlice<f32>>,
    pub(super) copied: CudaEvent,
}

/// Pinned staging for large uploads: two slots used in turn, so filling one can overlap the
/// copy out of the other.
pub(super) struct Staging {
    pub(super) copy_stream: Arc<CudaStream>,
    pub(super) slots: [StagingSlot; 2],
    pub(super) next: usize,
}

impl CudarcRuntime {
    /// `dst[..src.len()]` = `src` through pinned staging on the copy stream (see the module
    /// docs). `dst` is valid for `src.len()` elements (checked by the caller).
    pub(super) fn upload_staged(&self, src: &[f32], dst: WritePtr) -> Result<()> {
        const OP: &str = "upload";
        let mut staging = self
            .staging
            .lock()
            .map_err(|_| dev_err(OP, "staging poisoned"))?;
        let index = staging.next;
        staging.next = (index + 1) % staging.slots.len();
        let copy_stream = Arc::clone(&staging.copy_stream);
        let slot = &mut staging.slots[index];
        // The last copy out of this slot must be done before the host overwrites it.
        slot.copied.synchronize().map_err(|e| dev_err(OP, e))?;
        if slot.host.as_ref().is_none_or(|h| h.len() < src.len()) {
            // Free the smaller buffer before allocating the larger one.
            slot.host = None;
            // SAFETY: the memory is written below before any of it is read.
            let host =
                unsafe { self.ctx.alloc_pinned::<f32>(src.len()) }.map_err(|e| dev_err(OP, e))?;
            slot.host = Some(host);
        }
        let host = slot.host.as_mut().expect("allocated above");
        let staged = &mut host.as_mut_slice().map_err(|e| dev_err(OP, e))?[..src.len()];
        staged.copy_from_slice(src);
        // Write-after-read: kernels already queued on the compute stream may still read the
        // destination (the previous batch); the copy waits for them.
        copy_stream.join(&self.stream).map_err(|e| dev_err(OP, e))?;
        // SAFETY: `dst` was bounds-checked by the caller for `src.len()` elements; the pinned
        // buffer stays untouched until `copied` has completed (synchronised above on reuse,
        // and by PinnedHostSlice's drop).
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                dst.address(),
                staged,
                copy_stream.cu_stream(),
            )
        }
        .map_err(|e| dev_err(OP, e))?;
        slot.copied
            .record(&copy_stream)
            .map_err(|e| dev_err(OP, e))?;
        // Read-after-write: later kernels on the compute stream see the new data.
        self.stream.wait(&slot.copied).map_err(|e| dev_err(OP, e))
    }
}
