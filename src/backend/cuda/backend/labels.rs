//! Label checks for the label-indexed ops: on the host before each op, or, inside a CUDA
//! graph, by the kernels themselves (see the [parent module](super)).

use super::*;

impl<R: DeviceRuntime> CudaBackend<R> {
    /// The labels `labels`, downloaded and checked on the host as the CPU backend checks them
    /// ([`crate::backend::check_labels`]).
    pub(super) fn check_labels(
        &self,
        op: &'static str,
        labels: Slice<'_, CudaBuffer<R>>,
        ignore: Option<i32>,
        dim: usize,
    ) -> Result<()> {
        self.host_guard(op)?;
        labels.range(op, "labels")?;
        let mut host = vec![0f32; labels.len];
        Backend::download(self, labels, &mut host)?;
        crate::backend::check_labels(op, &host, ignore, dim)
    }

    /// For the kernels that report a bad label themselves: [`Self::check_labels`], except
    /// while capturing, when the kernel's report stands in for it (see [`Inner::label_error`]).
    /// Returns the report's address, the kernel's last argument.
    pub(super) fn check_labels_unless_capturing(
        &self,
        op: &'static str,
        labels: Slice<'_, CudaBuffer<R>>,
        ignore: Option<i32>,
        dim: usize,
    ) -> Result<WritePtr> {
        if !self.capturing() {
            self.check_labels(op, labels, ignore, dim)?;
        }
        self.label_error_word(op)
    }

    /// The address of the label-indexed kernels' report.
    fn label_error_word(&self, op: &'static str) -> Result<WritePtr> {
        Self::scratch(
            op,
            "label_error",
            &self.inner.label_error,
            0,
            LABEL_ERROR_LEN,
        )
    }

    /// Fails when a label-indexed kernel reported a bad label since the last call, and clears
    /// the report. Waits for the stream.
    pub(super) fn take_label_error(&self, op: &'static str) -> Result<()> {
        let mut report = [0f32; LABEL_ERROR_LEN];
        Backend::download(self, self.inner.label_error.whole(), &mut report)?;
        if report[0] == 0.0 {
            return Ok(());
        }
        let [_, label, dim] = report;
        self.grid_stride(op, LABEL_ERROR_LEN).run(kernels::Set {
            n: LABEL_ERROR_LEN as i32,
            value: 0.0,
            y: self.label_error_word(op)?,
        })?;
        Err(invalid(
            op,
            format!("label {label} is outside 0..{dim} (found by a kernel of the replayed graph)"),
        ))
    }
}
