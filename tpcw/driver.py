"""The TPC-W load driver: closed-loop emulated browsers (EBs) following a mix's navigation graph.

Each EB is one DB-API connection to any DSN (an embedded file or a replicated pair).  It walks
the mix's customer behaviour graph (tpcw/navigation.py: the UW RBE's matrices, not a flat
weighted choice, so carts are filled before they are bought), turns each page into the
procedure calls of tpcw/procedures.py with the RBE's random inputs, and records the web
interaction's response time (the sum of its calls).  Think time is zero by default: the driver
measures the database's capacity, not a user population.

Sessions: an EB starts as a returning customer (C_ID = NURand) with 80% probability, else
anonymous; its cart is created on its first Shopping Cart page and kept for the session; a new
session starts after a Buy Confirm (the cart is spent) or after `session_interactions` pages.

Determinism: every EB has its own `random.Random(seed, eb number)`; with one EB and the same
seed the sequence of calls is the same in every run, so the final state root is too.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from . import navigation
from .populate import scale as scale_of
from .random_helpers import CARD_TYPES, COUNTRIES, SHIP_TYPES, SUBJECTS, a_string, digsyl, n_string, nurand, \
    nurand_a_customers, nurand_a_items


@dataclass
class Stats:
    """Per-interaction latencies (seconds) and counts, mergeable across EBs."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: int = 0

    def merge(self, other: "Stats") -> None:
        for name, values in other.latencies.items():
            self.latencies[name].extend(values)
        for name, count in other.errors.items():
            self.errors[name] += count
        self.calls += other.calls

    @property
    def interactions(self) -> int:
        return sum(len(values) for values in self.latencies.values())


class EmulatedBrowser:
    """One closed-loop user: `step()` performs the next page and records it."""

    def __init__(self, connection, mix: str, items: int, ebs: int, number: int, seed: int,
                 session_interactions: int = 200):
        self.connection = connection
        self.mix = mix
        self.items = items
        self.customers = scale_of(items, ebs).customers
        self.random = random.Random(f"{seed}:{number}")
        self.a_items = nurand_a_items(items)
        self.a_customers = nurand_a_customers(self.customers)
        self.session_interactions = session_interactions
        self.cursor = connection.cursor()
        self.stats = Stats()
        self.pages_total = 0
        self._new_session()

    # --- session state ---

    def _new_session(self) -> None:
        self.state = "INIT"
        self.c_id = nurand(self.random, self.a_customers, 1, self.customers) if self.random.random() < 0.8 else None
        self.sc_id = None
        self.listed_items: list[int] = []
        self.cart_lines: list[tuple[int, int]] = []
        self.pages_in_session = 0

    def _call(self, procedure: str, *args) -> list[tuple]:
        self.stats.calls += 1
        self.cursor.callproc(procedure, args)
        return self.cursor.fetchall() if self.cursor.description else []

    def _random_item(self) -> int:
        return self.random.randint(1, self.items)

    def _promo(self) -> None:
        self._call("tpcw_promo", self._random_item())

    def _listed_or_random_item(self) -> int:
        return self.random.choice(self.listed_items) if self.listed_items else self._random_item()

    # --- pages ---

    def step(self) -> str:
        following = navigation.next_state(self.mix, self.state, self.random)
        if following == "HOME" and self.pages_in_session >= self.session_interactions:
            self._new_session()
            following = "HOME"
        started = time.perf_counter()
        try:
            getattr(self, f"_page_{following.lower()}")()
        except Exception:  # an interaction that failed still counts, as an error
            self.stats.errors[following] += 1
            raise
        finally:
            self.stats.latencies[following].append(time.perf_counter() - started)
        self.state = following
        self.pages_in_session += 1
        self.pages_total += 1
        return following

    def _page_home(self) -> None:
        self._call("tpcw_home", self.c_id)
        self._promo()

    def _page_newp(self) -> None:
        self._promo()
        self.listed_items = [row[0] for row in self._call("tpcw_new_products", self.random.choice(SUBJECTS))]

    def _page_bess(self) -> None:
        self._promo()
        self.listed_items = [row[0] for row in self._call("tpcw_best_sellers", self.random.choice(SUBJECTS))]

    def _page_prod(self) -> None:
        self.product = self._listed_or_random_item()
        self._call("tpcw_product_detail", self.product)

    def _page_sreq(self) -> None:
        self._promo()

    def _page_sres(self) -> None:
        self._promo()
        kind = self.random.randrange(3)
        if kind == 0:
            key = digsyl(nurand(self.random, self.a_items, 0, self.items // 10), 7)
            rows = self._call("tpcw_search_author", key)
        elif kind == 1:
            key = digsyl(nurand(self.random, self.a_items, 0, self.items // 5), 7)
            rows = self._call("tpcw_search_title", key)
        else:
            rows = self._call("tpcw_search_subject", self.random.choice(SUBJECTS))
        self.listed_items = [row[0] for row in rows]

    def _ensure_cart(self) -> None:
        if self.sc_id is None:
            self.sc_id = self._call("tpcw_cart_create", None)[0][0]

    def _page_shop(self) -> None:
        self._ensure_cart()
        related = self._random_item()
        if self.state == "PROD":
            rows = self._call("tpcw_cart_add", self.sc_id, getattr(self, "product", self._random_item()), related)
        elif self.state == "SHOP" and self.cart_lines:
            rows = self._call("tpcw_cart_update", self.sc_id, self._refreshed_quantities(), related)
        else:
            rows = self._call("tpcw_cart_refresh", self.sc_id, related)
        self.cart_lines = [(row[0], row[2]) for row in rows]
        self._promo()

    def _refreshed_quantities(self) -> str:
        """The RBE's cart refresh (tpcw.md 5.5): new quantities for some lines, 0 deletes."""
        if len(self.cart_lines) == 1:
            return f"{self.cart_lines[0][0]}:{self.random.randint(1, 10)}"
        chosen = set(self.random.sample(range(len(self.cart_lines)), self.random.randint(1, len(self.cart_lines))))
        parts = []
        for index, (i_id, quantity) in enumerate(self.cart_lines):
            if index in chosen:
                parts.append(f"{i_id}:{self.random.choice([q for q in range(10) if q != quantity])}")
            else:
                parts.append(f"{i_id}:0")
        return ",".join(parts)

    def _page_creg(self) -> None:
        self._call("tpcw_customer_registration", self.c_id)

    def _page_buyr(self) -> None:
        self._ensure_cart()
        if self.c_id is not None:
            uname = digsyl(self.c_id)
            self._call("tpcw_buy_request", self.c_id, uname.lower(), self.sc_id)
            return
        rng = self.random
        rows = self._call(
            "tpcw_buy_request_new", self.sc_id, a_string(rng, 8, 15), a_string(rng, 8, 15),
            a_string(rng, 15, 40), a_string(rng, 15, 40), a_string(rng, 10, 30), a_string(rng, 2, 20),
            a_string(rng, 5, 10), rng.choice(COUNTRIES)[1], n_string(rng, 9, 16), a_string(rng, 8, 20) + "@x.com",
            f"{rng.randint(1920, 2000)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", a_string(rng, 100, 500),
        )
        if rows:
            self.c_id = rows[0][0]

    def _page_buyc(self) -> None:
        self._ensure_cart()
        if self.c_id is None:
            self._page_buyr()
        rng = self.random
        arguments = [
            self.sc_id, self.c_id, rng.choice(CARD_TYPES), n_string(rng, 16, 16), a_string(rng, 10, 30),
            f"{rng.randint(2027, 2028)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", rng.choice(SHIP_TYPES),
        ]
        if rng.random() < 0.05:
            arguments += [a_string(rng, 15, 40), a_string(rng, 15, 40), a_string(rng, 4, 30), a_string(rng, 2, 20),
                          a_string(rng, 5, 10), rng.choice(COUNTRIES)[1]]
        self._call("tpcw_buy_confirm", *arguments)
        self.cart_lines = []

    def _page_ordi(self) -> None:
        pass  # a static form: no database work (tpcw.md section 4)

    def _page_ordd(self) -> None:
        c_id = self.c_id if self.c_id is not None else nurand(self.random, self.a_customers, 1, self.customers)
        uname = digsyl(c_id)
        self._call("tpcw_order_display", uname, uname.lower())

    def _page_admr(self) -> None:
        self.admin_item = self._listed_or_random_item()
        self._call("tpcw_admin_request", self.admin_item)

    def _page_admc(self) -> None:
        i_id = getattr(self, "admin_item", None) or self._random_item()
        rng = self.random
        self._call("tpcw_admin_confirm", i_id, round(rng.uniform(1, 9999.99), 2),
                   f"img{rng.randint(1, 10**6)}.gif", f"thumb{rng.randint(1, 10**6)}.gif")


@dataclass
class RunResult:
    mix: str
    clients: int
    duration_s: float
    stats: Stats
    failures: list[str]

    @property
    def wips(self) -> float:
        return self.stats.interactions / self.duration_s if self.duration_s else 0.0


def run_browsers(dsn: str, *, mix: str, clients: int, duration_s: float, items: int, ebs: int, seed: int = 1,
                 timeout: float = 30.0, progress=None, warmup_s: float = 0.0, workers: int | None = None,
                 max_interactions: int | None = None) -> RunResult:
    """Run `clients` EBs (threads, one connection each) for `duration_s`; closed loop.

    An embedded DSN (a file path) is opened with the TPC-W procedures and rules and `workers`.
    `max_interactions` stops each EB after that many pages (reproducible runs: with one EB and
    a fixed clock on the servers, the final state is the same in every mode).
    """
    import evedb

    if dsn.startswith("evedb://"):
        options = {"timeout": timeout}
    else:
        options = {"procedures": ("tpcw.procedures",), "rules": "tpcw", "workers": workers}

    if mix not in navigation.MIXES:
        raise ValueError(f"unknown mix {mix!r}: choose one of {', '.join(navigation.MIXES)}")
    total = Stats()
    failures: list[str] = []
    lock = threading.Lock()
    started = time.monotonic()
    measure_from = started + warmup_s
    deadline = measure_from + duration_s

    def browse(number: int) -> None:
        # A client id derived from the seed: the same run leaves the same reply cache.
        connection = evedb.connect(dsn, autocommit=True, client_id=f"tpcw-eb-{seed}-{number}", **options)
        browser = EmulatedBrowser(connection, mix, items, ebs, number, seed)
        try:
            while time.monotonic() < deadline:
                if max_interactions is not None and browser.pages_total >= max_interactions:
                    break
                in_window = time.monotonic() >= measure_from
                try:
                    browser.step()
                except Exception as error:
                    with lock:
                        failures.append(f"EB {number}: {type(error).__name__}: {error}")
                if not in_window:  # warm-up pages are not measured
                    browser.stats = Stats()
        finally:
            connection.close()
            with lock:
                total.merge(browser.stats)

    threads = [threading.Thread(target=browse, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.5)
        if progress is not None:
            progress(max(0.0, deadline - time.monotonic()))
    return RunResult(mix, clients, duration_s, total, failures)
