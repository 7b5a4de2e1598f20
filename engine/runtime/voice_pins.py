"""Voices whose prefix blocks stay pinned in the pool (Engine.warm_voice).

A pinned prefix survives eviction, so a voice warmed once skips its prefill on
every later utterance. Pins are kept least recently warmed first; once they hold
more than their share of the pool, the oldest go (never the newest one).
Engine-thread only.
"""

from __future__ import annotations

from collections import OrderedDict

from engine.runtime.block_manager import BlockManager


class VoicePins:
    def __init__(self, blocks: BlockManager, max_fraction: float):
        self.blocks = blocks
        self.max_fraction = max_fraction
        self._pins: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    @property
    def num_blocks(self) -> int:
        return sum(len(v) for v in list(self._pins.values()))  # (list: read from other threads for stats)

    def touch(self, name: str) -> bool:
        """Mark a pinned voice as just used; False if it is not pinned."""
        if name not in self._pins:
            return False
        self._pins.move_to_end(name)
        return True

    def pin(self, name: str, frames, key: bytes) -> bool:
        """Pin the voice's prefix if the cache holds all of it; False if it does not."""
        blocks = self.blocks.pin(frames, key)
        if blocks is None:
            return False
        self._pins[name] = blocks
        budget = self.max_fraction * self.blocks.num_blocks
        while len(self._pins) > 1 and self.num_blocks > budget:
            self.unpin(next(iter(self._pins)))
        return True

    def unpin(self, name: str) -> bool:
        blocks = self._pins.pop(name, None)
        if blocks is not None:
            self.blocks.unpin(blocks)
        return blocks is not None
