"""The luma quantiser index of VP8 frames, read from their headers (RFC 6386, sections 9 and 19.2).  FFmpeg's
trace_headers does not parse VP8, and its decoder does not export the index: the header's first partition is
bool-coded, so the fields before the index are decoded in turn."""

from __future__ import annotations

_KEY_START = b"\x9d\x01\x2a"  # a key frame's start code, after its 3-byte frame tag


class _BoolDecoder:
    """RFC 6386's boolean entropy decoder (section 7.3), over DATA; bytes past its end read as zeros (a truncated
    frame then gives a wrong index, not an error)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 2
        self.value = int.from_bytes(data[:2].ljust(2, b"\0"), "big")
        self.range, self.bits = 255, 0

    def bool(self, probability: int = 128) -> int:
        split = 1 + (((self.range - 1) * probability) >> 8)
        if self.value >= split << 8:
            bit, self.range, self.value = 1, self.range - split, self.value - (split << 8)
        else:
            bit, self.range = 0, split
        while self.range < 128:
            self.value, self.range, self.bits = self.value << 1, self.range << 1, self.bits + 1
            if self.bits == 8:
                self.bits = 0
                self.value |= self.data[self.pos] if self.pos < len(self.data) else 0
                self.pos += 1
        return bit

    def literal(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            value = (value << 1) | self.bool()
        return value

    def signed(self, bits: int) -> int:
        """A magnitude of BITS bits, then its sign."""
        magnitude = self.literal(bits)
        return -magnitude if self.bool() else magnitude

    def optional(self, bits: int, signed: bool = True) -> int | None:
        """A flag, then (where it is set) a value of BITS bits, signed or not."""
        if not self.bool():
            return None
        return self.signed(bits) if signed else self.literal(bits)


class Quantisers:
    """Reads the frames of one VP8 stream in decode order: each frame's finest luma AC quantiser index (0-127)
    among those its segments may use.  Segment quantisers persist from frame to frame until a frame updates
    them, and key frames reset them."""

    def __init__(self) -> None:
        self.absolute, self.segments = False, [0, 0, 0, 0]

    def read(self, frame: bytes) -> int | None:
        """FRAME's index; None where it is too short to hold a header."""
        if len(frame) < 3:
            return None
        key = not frame[0] & 1
        if key and (len(frame) < 10 or frame[3:6] != _KEY_START):
            return None
        header = _BoolDecoder(frame[10:] if key else frame[3:])
        if key:
            self.absolute, self.segments = False, [0, 0, 0, 0]
            header.literal(2)  # colour space, clamping type
        segmented = header.bool()
        if segmented:
            new_map, new_data = header.bool(), header.bool()
            if new_data:
                self.absolute = bool(header.bool())
                self.segments = [header.optional(7) or 0 for _ in range(4)]
                for _ in range(4):
                    header.optional(6)  # loop filter levels
            if new_map:
                for _ in range(3):
                    header.optional(8, signed=False)  # the segment map's tree probabilities
        header.literal(10)  # filter type, loop filter level, sharpness
        if header.bool() and header.bool():  # loop filter deltas, updated in this frame
            for _ in range(8):
                header.optional(6)
        header.literal(2)  # the number of DCT token partitions
        base = header.literal(7)
        if not segmented:
            return base
        return min(min(max(q if self.absolute else base + q, 0), 127) for q in self.segments)
