"""Window planning for the streaming vocoder (pure Python: no torch here).

HiFi-GAN is run over overlapping windows of a request's growing mel stream. A window that
delivers audio for frames [a, b) is fed mel frames [a - overlap - ctx_left, b + ctx_right):
with both contexts at least the generator's receptive field, the delivered samples are the
samples a single pass over the whole mel would give, so the stream equals offline vocoding.
``overlap`` frames at each seam are produced by both neighbours and crossfaded, and windows
grow (small first for time-to-first-audio, larger later for throughput).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

DEFAULT_SIZES = (12, 24, 48, 96, 192)


@dataclass(frozen=True)
class Window:
    """One vocoder call. Frames are indices into the request's mel stream."""

    mel_lo: int  # first mel frame fed to the vocoder
    mel_hi: int  # one past the last
    out_lo: int  # first frame of delivered audio (includes the crossfade head)
    out_hi: int  # one past the last frame computed exactly (b)
    head: int  # frames at out_lo crossfaded with the previous window's held tail
    hold: int  # frames at the end held back for the next window's crossfade
    final: bool


class WindowPlanner:
    """Decides the next vocoder window of one request as its mel stream grows."""

    def __init__(self, ctx_left: int, ctx_right: int, overlap: int = 1,
                 sizes: tuple[int, ...] = DEFAULT_SIZES):
        if ctx_left < 0 or ctx_right < 0 or overlap < 0:
            raise InputError("contexts and overlap must be >= 0")
        if not sizes or min(sizes) <= overlap:
            raise InputError("window sizes must exceed the overlap")
        self.ctx_left, self.ctx_right, self.overlap = ctx_left, ctx_right, overlap
        self.sizes = tuple(sizes)
        self.available = 0  # mel frames in the stream so far
        self.finished = False  # no more frames will come
        self.next = 0  # first frame not yet delivered exactly
        self.count = 0  # windows planned

    def add_frames(self, n: int) -> None:
        if self.finished:
            raise RuntimeError("add_frames after finish")
        self.available += n

    def finish(self) -> None:
        self.finished = True

    @property
    def done(self) -> bool:
        return self.finished and self.next >= self.available

    @property
    def keep_from(self) -> int:
        """Mel frames before this are no longer needed by any future window."""
        return max(0, self.next - self.overlap - self.ctx_left)

    def peek(self, max_frames: int | None = None) -> Window | None:
        """The next window if its frames (and right context) are available, else None.

        Sizes follow the growth schedule; ``max_frames`` caps the size (never below the first
        size) when the listener's buffer is short, so the window is back in time.
        """
        a, total = self.next, self.available
        if a >= total and self.finished:
            return None
        w = self.sizes[min(self.count, len(self.sizes) - 1)]
        if max_frames is not None:
            w = max(self.sizes[0], min(w, max_frames))
        b = a + w
        if self.finished:
            if total - b < self.sizes[0] // 2:  # no tiny last window: take the rest now
                b = total
            b = min(b, total)
        elif b + self.ctx_right > total:
            return None
        head = min(self.overlap, a)
        final = self.finished and b == total
        return Window(mel_lo=max(0, a - head - self.ctx_left),
                      mel_hi=min(total, b + self.ctx_right),
                      out_lo=a - head, out_hi=b, head=head,
                      hold=0 if final else min(self.overlap, b - a), final=final)

    def take(self, max_frames: int | None = None) -> Window | None:
        """Like :meth:`peek`, and marks the window planned."""
        win = self.peek(max_frames)
        if win is not None:
            self.next = win.out_hi
            self.count += 1
        return win
