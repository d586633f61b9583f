"""Shared widget plumbing: background tasks with progress and cancel, layer choosers, app state.

Every long action runs in a :func:`napari.qt.threading.thread_worker`; the
core reports progress through a callback that is turned into a queued Qt
signal (safe across threads), and a :class:`CancelToken` stops the work at
its next progress report.  The GUI thread only updates widgets.
"""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QEventLoop, QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from dls_microscopy.napari._task_helpers import (  # noqa: F401 - re-exported to the widgets
    labelled,
    log_failure,
    record_labels_used,
    shown_volume,
    window_private,
)
from dls_microscopy.pipeline.interactive import CancelledError, CancelToken, SessionRecorder

__all__ = ["AppState", "LayerChooser", "TaskWidget", "shown_volume", "state_for"]

log = logging.getLogger(__name__)


class AppState:
    """What the widgets of one viewer share: the recorder, a work folder, the latest results."""

    def __init__(self) -> None:
        self.recorder = SessionRecorder()
        self._workdir: Path | None = None
        self.temporary = False  # whether workdir is removed at exit
        self.meshes: Any = None  # MeshSet
        self.features: Any = None  # pyarrow.Table
        self.features_labels: str | None = None  # name of the labels layer measured
        self.features_field: Any = None  # FieldSpec: how a run names the image measured
        self.compartment = "Nuclei"  # of the features table
        self.meshes_labels: str | None = None  # name of the labels layer meshed
        self.meshes_field: Any = None  # FieldSpec of the image meshed
        self.listeners: list[Callable[[str], None]] = []

    @property
    def workdir(self) -> Path:
        """Folder for the labels written by the Segment widget.

        By default a temporary folder, removed when the app exits (save labels
        with File > Save Selected Layers, or rerun the saved pipeline).
        """
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="dls-microscopy-session-"))
            self.temporary = True
            # temporary like any unsaved work: removed when the app exits
            atexit.register(shutil.rmtree, self._workdir, True)
            log.info("session files go to %s (removed at exit)", self._workdir)
        return self._workdir

    @workdir.setter
    def workdir(self, path: str | Path) -> None:
        self._workdir = Path(path)
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.temporary = False

    def changed(self, what: str) -> None:
        """Tell the widgets that ``what`` (``"features"``, ``"meshes"``, ``"steps"``) changed."""
        for listener in list(self.listeners):
            listener(what)


_STATES: weakref.WeakKeyDictionary[Any, AppState] = weakref.WeakKeyDictionary()


def state_for(viewer: Any) -> AppState:
    """The :class:`AppState` of ``viewer`` (created on first use)."""
    if viewer not in _STATES:
        _STATES[viewer] = AppState()
    return _STATES[viewer]


class LayerChooser(QComboBox):
    """A combo box of the viewer's layers of some types, kept up to date."""

    def __init__(self, viewer: Any, layer_types: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layer_types = layer_types
        self.refresh()
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self.refresh)

    def _inserted(self, event: Any) -> None:
        """Re-list; a labels chooser takes a new labels layer.

        The newest labels are what the next step wants: after Segment, Meshes and
        Features measured the labels read with the file (the ground truth of a plate).
        """
        self.refresh()
        new = getattr(event, "value", None)
        if "labels" in self.layer_types and type(new).__name__.lower() in self.layer_types:
            self.setCurrentText(new.name)

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice where it still exists."""
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        names = [
            layer.name for layer in self.viewer.layers if type(layer).__name__.lower() in self.layer_types
        ]
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif names:
            self.setCurrentIndex(len(names) - 1 if "labels" in self.layer_types else 0)
        self.blockSignals(False)
        self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None


#: Seconds the app waits at exit for a cancelled task to stop (it stops at its next progress report).
EXIT_WAIT_S = 60.0


class _Failed:
    """What a task returns when it raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Bridge(QObject):
    progress = Signal(str, int, int)


class TaskWidget(QScrollArea):
    """Base of our widgets: a form, Run and Cancel buttons, a progress bar and a status line.

    Subclasses put their inputs into :attr:`form` (a QVBoxLayout) and call
    :meth:`start` with a function ``work(progress) -> result`` and a
    ``done(result)`` slot run on the GUI thread.  :attr:`finished` is emitted
    after every task (result or error), which tests wait on.

    The widget is a scroll area around its content (:attr:`content`, laid out by
    :attr:`outer`): napari docks widgets as they are, so without one the window had to be as
    tall as all docks stacked (2,535 px with our six).  It scrolls vertically; its minimum
    width is that of its content, so it never needs to scroll sideways, and the content
    fills the dock, so widgets given a stretch take the dock's height.
    """

    finished = Signal(object)

    def __init__(self, viewer: Any, run_text: str) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = state_for(viewer)
        self.worker: Any = None
        self.token: CancelToken | None = None
        self.last_error: BaseException | None = None
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.content = QWidget()
        self.outer = QVBoxLayout(self.content)
        self.form = QVBoxLayout()
        self.outer.addLayout(self.form)
        buttons = QHBoxLayout()
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.outer.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("idle")
        self.progress_bar.setValue(0)
        self.outer.addWidget(self.progress_bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.outer.addWidget(self.status)
        self.outer.addStretch(1)
        self.setWidget(self.content)
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._show_progress)
        self._status_id: Any = None  # the running task in napari's window (see _tell_napari)
        app = QApplication.instance()
        if app is not None:  # quitting stops the task: it ran on for hours after the window closed
            app.aboutToQuit.connect(self._cancel_for_exit)

    def showEvent(self, event: Any) -> None:
        """Guard the choices in the form from the wheel when shown (see :meth:`eventFilter`)."""
        for box in self.content.findChildren((QComboBox, QAbstractSpinBox)):
            if not box.property("dls_wheel_guard"):
                box.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not focused by the wheel either
                box.installEventFilter(self)
                box.setProperty("dls_wheel_guard", True)
        super().showEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """The wheel over a choice the user has not clicked scrolls the dock, as in a web form.

        Qt gives the wheel to a combo or spin box under the pointer: scrolling down a dock
        changed the settings it passed over.  Once clicked (focused), a box takes the wheel.
        """
        if (
            event.type() == QEvent.Type.Wheel
            and isinstance(watched, (QComboBox, QAbstractSpinBox))
            and not watched.hasFocus()
        ):
            self.wheelEvent(event)
            return True
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:
        """As wide as the content needs (with room for the vertical scroll bar); low."""
        hint = super().minimumSizeHint()
        width = self.content.minimumSizeHint().width() + 2 * self.frameWidth()
        width += self.verticalScrollBar().sizeHint().width()
        return QSize(max(hint.width(), width), hint.height())

    # -- running ----------------------------------------------------------------
    def safely(self, action: Callable[[], Any]) -> Callable[[], None]:
        """``action`` as a button slot: errors while preparing a task go to the status line."""

        def slot(*_: Any) -> None:
            try:
                action()
            except Exception as exc:  # shown to the user, never a crash of the event loop
                log_failure(f"{type(self).__name__}: %s", exc)
                self.status.setText(f"error: {exc}")

        return slot

    @property
    def running(self) -> bool:
        """Whether a task is running."""
        return self.worker is not None

    def start(
        self,
        work: Callable[[Callable[[str, int, int], None]], Any],
        done: Callable[[Any], None],
        *,
        discard_cancelled: bool = False,
    ) -> None:
        """Run ``work(progress)`` in a worker thread, then ``done(result)`` on the GUI thread.

        With ``discard_cancelled``, a result that comes back after Cancel (the work had no
        progress report left to stop at) is dropped and the task ends as cancelled: for
        tasks whose result replaces what the user typed.
        """
        from napari.qt.threading import thread_worker

        if self.running:
            self.status.setText("busy: wait for the running task or cancel it")
            return
        self.last_error = None
        self.token = CancelToken()
        token = self.token
        forward = token.wrap(self._bridge.progress.emit)

        def report(description: str, done: int, total: int) -> None:
            if worker.abort_requested:  # napari quits its workers when its window closes
                token.cancel()
            forward(description, done, total)

        @thread_worker(start_thread=False)
        def task() -> Any:
            # errors come back as values: shown in our status line, not as napari error pop-ups
            try:
                return work(report)
            except Exception as exc:
                return _Failed(exc)

        worker = task()

        def returned(result: Any) -> None:
            if discard_cancelled and token.cancelled and not isinstance(result, _Failed):
                result = _Failed(CancelledError("cancelled by the user"))
            self._returned(done, result)

        worker.returned.connect(returned)
        worker.errored.connect(self._errored)
        worker.finished.connect(self._finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first report
        self.progress_bar.setFormat("starting…")
        self.status.setText("")
        self._status_id = self._tell_napari(self.token)
        worker.start()

    def cancel(self) -> None:
        """Stop the running task at its next progress report."""
        if self.token is not None:
            self.token.cancel()  # the task raises CancelledError at its next progress report
        self.status.setText("cancelling…")

    def _cancel_task(self, token: CancelToken) -> bool:
        """Cancel the task of ``token`` if it is still the one running (as the Cancel button)."""
        if token is not self.token or not self.running:
            return False  # napari cancels every task it was told of, finished ones too
        self.cancel()
        return True

    def _tell_napari(self, token: CancelToken) -> Any:
        """Register the task with napari's window, which cancels it when the window closes.

        napari asks before closing a window with tasks running (listing them), then
        cancels them: through :meth:`cancel`, as the Cancel button does.  The registry is
        napari's private API (``Window._register_task_status``): without it (another napari,
        a viewer without a window), the task is cancelled when the application quits only.
        """
        register = window_private(self.viewer, "_register_task_status")
        if register is None:
            return None
        try:
            from napari.utils.task_status import Status

            return register(
                "DLS Microscopy",
                Status.BUSY,
                f"{self.run_button.text()} is running",
                cancel_callback=functools.partial(self._cancel_task, token),
            )
        except Exception as exc:  # best effort: quitting still cancels
            log.debug("task not registered with napari: %s", exc)
            return None

    def _napari_done(self) -> None:
        """Tell napari's window that the task ended (see :meth:`_tell_napari`)."""
        status_id, self._status_id = self._status_id, None
        update = window_private(self.viewer, "_update_task_status")
        if status_id is None or update is None:
            return
        try:
            from napari.utils.task_status import Status

            error = self.last_error
            status = (
                Status.COMPLETED
                if error is None
                else Status.CANCELLED
                if isinstance(error, CancelledError)
                else Status.FAILED
            )
            update(status_id, status)
        except Exception as exc:  # best effort, as the registration
            log.debug("task status not updated in napari: %s", exc)

    def _cancel_for_exit(self) -> None:
        """The application quits: cancel the running task and wait (briefly) for it to stop.

        Waiting lets the task remove its partial outputs before the session folder is
        removed at exit; a task that does not stop within :data:`EXIT_WAIT_S` is left
        for Qt to wait on.
        """
        if not self.running:
            return
        log.info("%s: the application quits, cancelling the running task", type(self).__name__)
        self.cancel()
        # this task only: napari's pool may hold other plugins' workers, which are theirs to stop
        deadline = time.monotonic() + EXIT_WAIT_S
        while self.running and time.monotonic() < deadline:
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)  # its finished signal
            time.sleep(0.02)
        if self.running:
            log.warning("%s: the task did not stop within %g s of quitting", type(self).__name__, EXIT_WAIT_S)

    def _show_progress(self, description: str, done: int, total: int) -> None:
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(done, total))
            self.progress_bar.setFormat(f"{description}: %v/%m")
        else:
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat(description)

    def _returned(self, done: Callable[[Any], None], result: Any) -> None:
        if isinstance(result, _Failed):
            self._errored(result.error)
            return
        try:
            done(result)
        except Exception as exc:  # a failure while showing results is shown like a task error
            log.exception("showing the result failed")
            self._errored(exc)

    def _errored(self, exc: BaseException) -> None:
        self.last_error = exc
        if isinstance(exc, CancelledError):
            self.status.setText("cancelled")
        else:
            self.status.setText(f"error: {exc}")
            log_failure(f"{type(self).__name__} failed: %s", exc)

    def _finished(self) -> None:
        aborted = self.worker is not None and self.worker.abort_requested
        if aborted and self.last_error is None:  # quit by napari: its result is not returned
            self._errored(CancelledError("cancelled by the user"))
        self.worker = None
        self._napari_done()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0 if self.last_error else 1)
        if self.last_error is None:
            self.progress_bar.setFormat("done")
        elif isinstance(self.last_error, CancelledError):
            self.progress_bar.setFormat("cancelled")
        else:
            self.progress_bar.setFormat("failed")
        self.finished.emit(self.last_error)
