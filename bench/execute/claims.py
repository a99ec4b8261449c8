"""Claims: keep the claim files (bench.store) of running jobs fresh so another invocation never takes them."""

from __future__ import annotations

import threading

from bench import store


class ClaimKeeper:
    """Refreshes held claims in the background so that long runs never look stale."""

    def __init__(self, ttl_s: float) -> None:
        self.interval = max(1.0, min(60.0, ttl_s / 4))
        self.claims: dict[str, store.Claim] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, claim: store.Claim) -> None:
        self.claims[claim.run_id] = claim

    def remove(self, claim: store.Claim) -> None:
        self.claims.pop(claim.run_id, None)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for claim in list(self.claims.values()):
                store.refresh_claim(claim)
