"""TPC-W's random helpers and fixed lists (tpcw.md section 2.2 and 2.3).

Shared by the loader (`tpcw.populate`), the procedures (`tpcw.procedures`) and a driver, so
that all of them spell subjects, card types and user names the same way.

- `digsyl(d, n=0)`: DigSyl, digits of d as syllables (0->BA ... 9->NG), n low-order digits
  left-padded with BA when n > 0; customer user names are `digsyl(c_id)`.
- `nurand(rng, a, x, y)`: NURand(A, x, y) = ((U[0,A] | U[x,y]) % (y-x+1)) + x, with the
  A constants of `nurand_a_customers(n)` and `nurand_a_items(n)`.
- `a_string(rng, lo, hi)` / `n_string(rng, lo, hi)`: a random string of length U[lo,hi] over
  the 79-character a-string alphabet / over the ten digits.
- `StringPool`: the same strings, fast: slices of one long random string at random offsets
  (each character still uniform over the alphabet); the loader uses it.
- `prefix_range(key)`: the bounds (low, high) such that `low <= s < high` exactly when the
  text s starts with `key` (case-sensitive, like the reference DB2/H2 `LIKE key%`): a range
  an index serves whatever the bound values, unlike GLOB or LIKE on a bound pattern, which
  SQLite can only turn into a range by re-preparing for each value.
"""

from __future__ import annotations

import datetime
import random

__all__ = [
    "A_STRING_CHARS", "DIGITS", "SUBJECTS", "BACKINGS", "CARD_TYPES", "SHIP_TYPES",
    "ORDER_STATUSES", "COUNTRIES", "ITEM_SCALES", "digsyl", "nurand", "nurand_a_customers",
    "nurand_a_items", "a_string", "n_string", "StringPool", "uniform_int", "prefix_range", "random_date",
]

# a-z A-Z ! @ # $ % ^ & * ( ) _ - = + { } [ ] | : ; , . ? / ~ <space>: 79 characters.
A_STRING_CHARS = (
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "!@#$%^&*()_-=+{}[]|:;,.?/~ "
)
assert len(A_STRING_CHARS) == 79
DIGITS = "0123456789"

# The spec's 24 subjects (UW spelling SCIENCE-FICTION; Eve and NYU use SCIENCE_FICTION).
SUBJECTS = (
    "ARTS", "BIOGRAPHIES", "BUSINESS", "CHILDREN", "COMPUTERS", "COOKING", "HEALTH", "HISTORY",
    "HOME", "HUMOR", "LITERATURE", "MYSTERY", "NON-FICTION", "PARENTING", "POLITICS",
    "REFERENCE", "RELIGION", "ROMANCE", "SELF-HELP", "SCIENCE-NATURE", "SCIENCE-FICTION",
    "SPORTS", "YOUTH", "TRAVEL",
)
BACKINGS = ("HARDBACK", "PAPERBACK", "USED", "AUDIO", "LIMITED-EDITION")
CARD_TYPES = ("VISA", "MASTERCARD", "DISCOVER", "AMEX", "DINERS")
SHIP_TYPES = ("AIR", "UPS", "FEDEX", "SHIP", "COURIER", "MAIL")
ORDER_STATUSES = ("PROCESSING", "SHIPPED", "PENDING", "DENIED")

# NUM_ITEMS values the UW RBE accepts, with NURand's A for item ids (clause 2.10.5.1).
ITEM_SCALES = {1_000: 63, 10_000: 511, 100_000: 4_095, 1_000_000: 32_767, 10_000_000: 524_287}

# (co_id, co_name, co_exchange, co_currency): the 92 countries of the reference loader.
_COUNTRY_TEXT = (
    "1:United States:1:Dollars; 2:United Kingdom:.625461:Pounds; 3:Canada:1.46712:Dollars; "
    "4:Germany:1.86125:Deutsche Marks; 5:France:6.24238:Francs; 6:Japan:121.907:Yen; "
    "7:Netherlands:2.09715:Guilders; 8:Italy:1842.64:Lira; 9:Switzerland:1.51645:Francs; "
    "10:Australia:1.54208:Dollars; 11:Algeria:65.3851:Dinars; 12:Argentina:0.998:Pesos; "
    "13:Armenia:540.92:Dram; 14:Austria:13.0949:Schillings; 15:Azerbaijan:3977:Manat; "
    "16:Bahamas:1:Dollars; 17:Bahrain:.3757:Dinar; 18:Bangla Desh:48.65:Taka; "
    "19:Barbados:2:Dollars; 20:Belarus:248000:Rouble; 21:Belgium:38.3892:Francs; "
    "22:Bermuda:1:Dollars; 23:Bolivia:5.74:Boliviano; 24:Botswana:4.7304:Pula; "
    "25:Brazil:1.71:Real; 26:Bulgaria:1846:Lev; 27:Cayman Islands:.8282:Dollars; "
    "28:Chad:627.1999:Franc; 29:Chile:494.2:Pesos; 30:China:8.278:Yuan Renmimbi; "
    "31:Christmas Island:1.5391:Dollars; 32:Colombia:1677:Pesos; 33:Croatia:7.3044:Kuna; "
    "34:Cuba:23:Pesos; 35:Cyprus:.543:Pounds; 36:Czech Republic:36.0127:Koruna; "
    "37:Denmark:7.0707:Kroner; 38:Dominican Republic:15.8:Pesos; "
    "39:Eastern Caribbean:2.7:Dollars; 40:Ecuador:9600:Sucre; 41:Egypt:3.33771:Pounds; "
    "42:El Salvador:8.7:Colon; 43:Estonia:14.9912:Kroon; 44:Ethiopia:7.7:Birr; "
    "45:Falkland Island:.6255:Pound; 46:Faroe Island:7.124:Krone; 47:Fiji:1.9724:Dollars; "
    "48:Finland:5.65822:Markka; 49:Gabon:627.1999:Franc; 50:Gibraltar:.6255:Pound; "
    "51:Greece:309.214:Drachmas; 52:Guam:1:Dollars; 53:Hong Kong:7.75473:Dollars; "
    "54:Hungary:237.23:Forint; 55:Iceland:74.147:Krona; 56:India:42.75:Rupees; "
    "57:Indonesia:8100:Rupiah; 58:Iran:3000:Rial; 59:Iraq:.3083:Dinar; "
    "60:Ireland:.749481:Punt; 61:Israel:4.12:Shekels; 62:Jamaica:37.4:Dollars; "
    "63:Jordan:0.708:Dinar; 64:Kazakhstan:150:Tenge; 65:Kuwait:.3062:Dinar; "
    "66:Lebanon:1502:Pounds; 67:Luxembourg:38.3892:Francs; 68:Malaysia:3.8:Ringgit; "
    "69:Mexico:9.6287:Pesos; 70:Mauritius:25.245:Rupees; 71:New Zealand:1.87539:Dollars; "
    "72:Norway:7.83101:Kroner; 73:Pakistan:52:Rupees; 74:Philippines:37.8501:Pesos; "
    "75:Poland:3.9525:Zloty; 76:Portugal:190.788:Escudo; 77:Romania:15180.2:Leu; "
    "78:Russia:24.43:Rubles; 79:Saudi Arabia:3.7501:Riyal; 80:Singapore:1.72929:Dollars; "
    "81:Slovakia:43.9642:Koruna; 82:South Africa:6.25845:Rand; 83:South Korea:1190.15:Won; "
    "84:Spain:158.34:Pesetas; 85:Sudan:5.282:Dinar; 86:Sweden:8.54477:Krona; "
    "87:Taiwan:32.77:Dollars; 88:Thailand:37.1414:Baht; 89:Trinidad:6.1764:Dollars; "
    "90:Turkey:401500:Lira; 91:Venezuela:596:Bolivar; 92:Zambia:2447.7:Kwacha"
)


def _parse_countries(text: str) -> tuple[tuple[int, str, float, str], ...]:
    rows = []
    for entry in text.split(";"):
        co_id, name, exchange, currency = entry.strip().split(":")
        rows.append((int(co_id), name, float(exchange), currency))
    return tuple(rows)


COUNTRIES = _parse_countries(_COUNTRY_TEXT)
assert len(COUNTRIES) == 92 and [c[0] for c in COUNTRIES] == list(range(1, 93))

_SYLLABLES = ("BA", "OG", "AL", "RI", "RE", "SE", "AT", "UL", "IN", "NG")


def digsyl(d: int, n: int = 0) -> str:
    """DigSyl(d, n): DigSyl(1234) == "OGALRIRE"; with n > 0 exactly the n low-order digits."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise ValueError(f"digsyl needs a non-negative integer, got {d!r}")
    digits = str(d)
    if n > 0:
        digits = digits.rjust(n, "0")[-n:]
    return "".join(_SYLLABLES[ord(c) - 48] for c in digits)


def nurand(rng: random.Random, a: int, x: int, y: int) -> int:
    """NURand(A, x, y) = ((U[0,A] | U[x,y]) % (y - x + 1)) + x."""
    return ((rng.randint(0, a) | rng.randint(x, y)) % (y - x + 1)) + x


def nurand_a_customers(num_customers: int) -> int:
    """NURand's A for customer ids (clause 2.3.2): 1023 up to 9,999 customers, then x4 per x4."""
    limit, a = 9_999, 1_023
    while num_customers > limit:
        limit, a = limit * 4 + 3, a * 4 + 3  # 39,999 / 4095, 159,999 / 16383, ...
    return a


def nurand_a_items(num_items: int) -> int:
    """NURand's A for item ids (clause 2.10.5.1), for the five legal item counts."""
    try:
        return ITEM_SCALES[num_items]
    except KeyError:
        raise ValueError(f"NUM_ITEMS must be one of {sorted(ITEM_SCALES)}, got {num_items}") from None


def a_string(rng: random.Random, lo: int, hi: int | None = None) -> str:
    """a-string(lo, hi): length U[lo, hi], characters uniform over the 79-character set."""
    length = lo if hi is None else rng.randint(lo, hi)
    return "".join(rng.choices(A_STRING_CHARS, k=length))


def n_string(rng: random.Random, lo: int, hi: int | None = None) -> str:
    """n-string(lo, hi): length U[lo, hi] of decimal digits (kept as text: leading zeros stay)."""
    length = lo if hi is None else rng.randint(lo, hi)
    return "".join(rng.choices(DIGITS, k=length))


class StringPool:
    """Random strings at a fraction of `a_string`'s cost, for bulk loading.

    One long random string is drawn once; a string of length n is the slice at a uniform
    random offset.  Every character of every string is still uniform over the alphabet;
    strings from overlapping slices are correlated, which no TPC-W query can notice.
    """

    def __init__(self, rng: random.Random, alphabet: str = A_STRING_CHARS, size: int = 1 << 18):
        self._random = rng.random
        self._text = "".join(rng.choices(alphabet, k=size))
        self._size = size

    def take(self, lo: int, hi: int | None = None) -> str:
        """A string of length U[lo, hi] (exactly lo when hi is None)."""
        random = self._random
        length = lo if hi is None else lo + int(random() * (hi - lo + 1))
        start = int(random() * (self._size - length))
        return self._text[start:start + length]


def uniform_int(rng: random.Random):
    """A fast U[a, b] drawing from `rng` (floor of random() * width: no rejection loop).

    `random.randint` costs three Python calls per draw; the loader draws millions.
    """
    random = rng.random

    def draw(a: int, b: int) -> int:
        return a + int(random() * (b - a + 1))

    return draw


_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_range(key: str) -> tuple[str, str | bytes]:
    """(key, the least text after every text that starts with `key`).

    SQLite compares text by its UTF-8 bytes, which orders like code points: the upper bound
    is `key` with its last character raised by one (trailing U+10FFFF dropped first, and the
    surrogates, which text cannot hold, skipped).  With nothing left to raise, every text
    qualifies: the bound is an empty BLOB, which sorts after all text."""
    stem = key.rstrip(chr(_MAX_CODE_POINT))
    if not stem:
        return key, b""
    following = ord(stem[-1]) + 1
    if following in _SURROGATES:
        following = _SURROGATES.stop
    return key, stem[:-1] + chr(following)


_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def random_date(rng: random.Random, first_year: int, last_year: int) -> datetime.date:
    """A calendar date as the reference loader draws it: year, month, then day (Feb = 28)."""
    year = rng.randint(first_year, last_year)
    month = rng.randint(0, 11)
    day = rng.randint(1, _DAYS_IN_MONTH[month])
    return datetime.date(year, month + 1, day)
