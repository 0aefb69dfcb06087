"""TPC-W navigation: the UW RBE's customer behaviour graphs (CBMG) for the three mixes.

Each emulated browser is a Markov chain over 15 states (INIT and the 14 pages).  A row holds
cumulative thresholds in 1..9999 (tpcw.md section 5.2, from UW `EBTPCW1/2/3Factory`); the next
state is the first column whose threshold is >= r, r = U[1, 9999].  Their stationary
distributions are the mix percentages of section 5.1 (checked by tests/test_tpcw_driver.py).

The driver uses the graph, not a flat weighted choice, because the graph is what makes the
workload stateful: Product Detail follows a page that listed items, Buy Confirm follows Buy
Request on a filled cart, Admin Confirm follows Admin Request.
"""

from __future__ import annotations

import random

STATES = ("INIT", "ADMC", "ADMR", "BESS", "BUYC", "BUYR", "CREG", "HOME", "NEWP", "ORDD", "ORDI", "PROD",
          "SREQ", "SRES", "SHOP")
PAGES = STATES[1:]

# Spec names, for reports (section 4).
INTERACTION_NAMES = {
    "HOME": "Home", "NEWP": "New Products", "BESS": "Best Sellers", "PROD": "Product Detail",
    "SREQ": "Search Request", "SRES": "Search Results", "SHOP": "Shopping Cart",
    "CREG": "Customer Registration", "BUYR": "Buy Request", "BUYC": "Buy Confirm",
    "ORDI": "Order Inquiry", "ORDD": "Order Display", "ADMR": "Admin Request", "ADMC": "Admin Confirm",
}

# Section 5.1, the percentages a long run of each graph approaches (spec clause values).
MIX_PERCENTAGES = {
    "browsing": {"HOME": 29.00, "NEWP": 11.00, "BESS": 11.00, "PROD": 21.00, "SREQ": 12.00, "SRES": 11.00,
                 "SHOP": 2.00, "CREG": 0.82, "BUYR": 0.75, "BUYC": 0.69, "ORDI": 0.30, "ORDD": 0.25,
                 "ADMR": 0.10, "ADMC": 0.09},
    "shopping": {"HOME": 16.00, "NEWP": 5.00, "BESS": 5.00, "PROD": 17.00, "SREQ": 20.00, "SRES": 17.00,
                 "SHOP": 11.60, "CREG": 3.00, "BUYR": 2.60, "BUYC": 1.20, "ORDI": 0.75, "ORDD": 0.66,
                 "ADMR": 0.10, "ADMC": 0.09},
    "ordering": {"HOME": 9.12, "NEWP": 0.46, "BESS": 0.46, "PROD": 12.35, "SREQ": 14.53, "SRES": 13.08,
                 "SHOP": 13.53, "CREG": 12.86, "BUYR": 12.73, "BUYC": 10.18, "ORDI": 0.25, "ORDD": 0.22,
                 "ADMR": 0.12, "ADMC": 0.11},
}

_ROWS = {
    "browsing": """
INIT 0,0,0,0,0,0,0,9999,0,0,0,0,0,0,0
ADMC 0,0,0,0,0,0,0,9877,0,0,0,0,9999,0,0
ADMR 0,8999,0,0,0,0,0,9999,0,0,0,0,0,0,0
BESS 0,0,0,0,0,0,0,4607,0,0,0,5259,9942,0,9999
BUYC 0,0,0,0,0,0,0,342,0,0,0,0,9999,0,0
BUYR 0,0,0,0,9199,0,0,9595,0,0,0,0,0,0,9999
CREG 0,0,0,0,0,9145,0,9619,0,0,0,0,9999,0,0
HOME 0,0,0,3792,0,0,0,0,7585,0,7688,0,9559,0,9999
NEWP 0,0,0,0,0,0,0,299,0,0,0,9867,9941,0,9999
ORDD 0,0,0,0,0,0,0,802,0,0,0,0,9999,0,0
ORDI 0,0,0,0,0,0,0,523,0,8856,0,0,9999,0,0
PROD 0,0,47,0,0,0,0,8346,0,0,0,9749,9890,0,9999
SREQ 0,0,0,0,0,0,0,788,0,0,0,0,0,9955,9999
SRES 0,0,0,0,0,0,0,3674,0,0,0,9868,9942,0,9999
SHOP 0,0,0,0,0,0,4099,8883,0,0,0,0,0,0,9999
""",
    "shopping": """
INIT 0,0,0,0,0,0,0,9999,0,0,0,0,0,0,0
ADMC 0,0,0,0,0,0,0,9952,0,0,0,0,9999,0,0
ADMR 0,8999,0,0,0,0,0,9999,0,0,0,0,0,0,0
BESS 0,0,0,0,0,0,0,167,0,0,0,472,9927,0,9999
BUYC 0,0,0,0,0,0,0,84,0,0,0,0,9999,0,0
BUYR 0,0,0,0,4614,0,0,6546,0,0,0,0,0,0,9999
CREG 0,0,0,0,0,8666,0,8760,0,0,0,0,9999,0,0
HOME 0,0,0,3124,0,0,0,0,6249,0,6718,0,7026,0,9999
NEWP 0,0,0,0,0,0,0,156,0,0,0,9735,9784,0,9999
ORDD 0,0,0,0,0,0,0,69,0,0,0,0,9999,0,0
ORDI 0,0,0,0,0,0,0,72,0,8872,0,0,9999,0,0
PROD 0,0,58,0,0,0,0,832,0,0,0,1288,8603,0,9999
SREQ 0,0,0,0,0,0,0,635,0,0,0,0,0,9135,9999
SRES 0,0,0,0,0,0,0,2657,0,0,0,9294,9304,0,9999
SHOP 0,0,0,0,0,0,2585,9992,0,0,0,0,0,0,9999
""",
    "ordering": """
INIT 0,0,0,0,0,0,0,9999,0,0,0,0,0,0,0
ADMC 0,0,0,0,0,0,0,8348,0,0,0,0,9999,0,0
ADMR 0,8999,0,0,0,0,0,9999,0,0,0,0,0,0,0
BESS 0,0,0,0,0,0,0,1,0,0,0,333,9998,0,9999
BUYC 0,0,0,0,0,0,0,2,0,0,0,0,9999,0,0
BUYR 0,0,0,0,7999,0,0,9453,0,0,0,0,0,0,9999
CREG 0,0,0,0,0,9899,0,9901,0,0,0,0,9999,0,0
HOME 0,0,0,499,0,0,0,0,999,0,1269,0,1295,0,9999
NEWP 0,0,0,0,0,0,0,504,0,0,0,9942,9976,0,9999
ORDD 0,0,0,0,0,0,0,9939,0,0,0,0,9999,0,0
ORDI 0,0,0,0,0,0,0,1168,0,9968,0,0,9999,0,0
PROD 0,0,99,0,0,0,0,3750,0,0,0,5621,6341,0,9999
SREQ 0,0,0,0,0,0,0,815,0,0,0,0,0,9815,9999
SRES 0,0,0,0,0,0,0,486,0,0,0,7817,9998,0,9999
SHOP 0,0,0,0,0,0,9499,9918,0,0,0,0,0,0,9999
""",
}


def _parse(text: str) -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in text.strip().splitlines():
        state, values = line.split()
        rows[state] = tuple(int(value) for value in values.split(","))
    return rows


GRAPHS = {mix: _parse(text) for mix, text in _ROWS.items()}
MIXES = tuple(GRAPHS)


def next_state(mix: str, state: str, generator: random.Random) -> str:
    """The page an emulated browser visits after `state` (UW EB.nextState)."""
    thresholds = GRAPHS[mix][state]
    draw = generator.randint(1, 9999)
    for column, threshold in enumerate(thresholds):
        if threshold and draw <= threshold:
            return STATES[column]
    raise AssertionError(f"row {state} of the {mix} graph has no threshold >= {draw}")


def stationary_distribution(mix: str, iterations: int = 2000) -> dict[str, float]:
    """Percent of visits per page in the long run (power iteration; INIT excluded)."""
    rows = GRAPHS[mix]
    probability = {state: 1.0 if state == "HOME" else 0.0 for state in STATES}
    for _ in range(iterations):
        following = dict.fromkeys(STATES, 0.0)
        for state, weight in probability.items():
            previous = 0
            for column, threshold in enumerate(rows[state]):
                if threshold:
                    following[STATES[column]] += weight * (threshold - previous) / 9999
                    previous = threshold
        probability = following
    total = sum(probability[page] for page in PAGES)
    return {page: 100 * probability[page] / total for page in PAGES}
