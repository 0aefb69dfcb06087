-- TPC-W schema for evedb (tpcw.md section 1): the ten tables of the UW reference DDL with
-- SQLite affinities (INTEGER ids and counts, REAL money and rates, TEXT strings; dates are
-- TEXT 'YYYY-MM-DD', timestamps TEXT 'YYYY-MM-DD HH:MM:SS', UTC).  Primary keys only, as
-- in the reference (no foreign-key constraints).  `tpcw.populate` creates the tables, loads
-- them, then creates the indexes below.

CREATE TABLE country (
    co_id        INTEGER PRIMARY KEY,
    co_name      TEXT,
    co_exchange  REAL,
    co_currency  TEXT
);

CREATE TABLE address (
    addr_id       INTEGER PRIMARY KEY,
    addr_street1  TEXT,
    addr_street2  TEXT,
    addr_city     TEXT,
    addr_state    TEXT,
    addr_zip      TEXT,
    addr_co_id    INTEGER             -- -> country.co_id
);

CREATE TABLE customer (
    c_id          INTEGER PRIMARY KEY,
    c_uname       TEXT,               -- DigSyl(c_id)
    c_passwd      TEXT,               -- lower(c_uname)
    c_fname       TEXT,
    c_lname       TEXT,
    c_addr_id     INTEGER,            -- -> address.addr_id
    c_phone       TEXT,
    c_email       TEXT,
    c_since       TEXT,               -- date
    c_last_login  TEXT,               -- date
    c_login       TEXT,               -- timestamp
    c_expiration  TEXT,               -- timestamp
    c_discount    REAL,               -- a fraction, 0.00 .. 0.50
    c_balance     REAL,
    c_ytd_pmt     REAL,
    c_birthdate   TEXT,               -- date
    c_data        TEXT
);

CREATE TABLE author (
    a_id     INTEGER PRIMARY KEY,
    a_fname  TEXT,
    a_lname  TEXT,
    a_mname  TEXT,
    a_dob    TEXT,                    -- date
    a_bio    TEXT
);

CREATE TABLE item (
    i_id          INTEGER PRIMARY KEY,
    i_title       TEXT,
    i_a_id        INTEGER,            -- -> author.a_id
    i_pub_date    TEXT,               -- date
    i_publisher   TEXT,
    i_subject     TEXT,
    i_desc        TEXT,
    i_related1    INTEGER,            -- -> item.i_id (x5)
    i_related2    INTEGER,
    i_related3    INTEGER,
    i_related4    INTEGER,
    i_related5    INTEGER,
    i_thumbnail   TEXT,
    i_image       TEXT,
    i_srp         REAL,
    i_cost        REAL,
    i_avail       TEXT,               -- date
    i_stock       INTEGER,
    i_isbn        TEXT,
    i_page        INTEGER,
    i_backing     TEXT,
    i_dimensions  TEXT
);

CREATE TABLE orders (
    o_id            INTEGER PRIMARY KEY,
    o_c_id          INTEGER,          -- -> customer.c_id
    o_date          TEXT,             -- timestamp
    o_sub_total     REAL,
    o_tax           REAL,
    o_total         REAL,
    o_ship_type     TEXT,
    o_ship_date     TEXT,             -- date
    o_bill_addr_id  INTEGER,          -- -> address.addr_id
    o_ship_addr_id  INTEGER,          -- -> address.addr_id
    o_status        TEXT
);

-- order_line and shopping_cart_line are clustered on their keys (WITHOUT ROWID), as TPC-W
-- implementations on other databases cluster them: an order's lines, a cart's lines, are
-- neighbours, and the secondary indexes carry the key, so best sellers restricts recent lines
-- by (ol_i_id, ol_o_id) in the index and reads each line once by key.  Best sellers: 3-4x
-- faster on 10,000 items (evedb/DESIGN.md, "TPC-W").
CREATE TABLE order_line (
    ol_id        INTEGER NOT NULL,    -- line number inside the order, from 1
    ol_o_id      INTEGER NOT NULL,    -- -> orders.o_id
    ol_i_id      INTEGER,             -- -> item.i_id
    ol_qty       INTEGER,
    ol_discount  REAL,
    ol_comments  TEXT,
    PRIMARY KEY (ol_o_id, ol_id)
) WITHOUT ROWID;

CREATE TABLE cc_xacts (
    cx_o_id       INTEGER PRIMARY KEY, -- -> orders.o_id (1:1)
    cx_type       TEXT,
    cx_num        TEXT,
    cx_name       TEXT,
    cx_expire     TEXT,               -- date
    cx_auth_id    TEXT,
    cx_xact_amt   REAL,
    cx_xact_date  TEXT,               -- date
    cx_co_id      INTEGER             -- -> country.co_id
);

CREATE TABLE shopping_cart (
    sc_id    INTEGER PRIMARY KEY,
    sc_time  TEXT                     -- timestamp
);

CREATE TABLE shopping_cart_line (
    scl_sc_id  INTEGER NOT NULL,      -- -> shopping_cart.sc_id
    scl_qty    INTEGER,
    scl_i_id   INTEGER NOT NULL,      -- -> item.i_id
    PRIMARY KEY (scl_sc_id, scl_i_id)
) WITHOUT ROWID;

-- The 13 secondary indexes of the UW reference (addIndexes), names as in the reference.
CREATE INDEX author_a_lname ON author (a_lname);
CREATE INDEX address_addr_co_id ON address (addr_co_id);
CREATE INDEX addr_zip ON address (addr_zip);
CREATE INDEX customer_c_addr_id ON customer (c_addr_id);
CREATE INDEX customer_c_uname ON customer (c_uname);
CREATE INDEX item_i_title ON item (i_title);
CREATE INDEX item_i_subject ON item (i_subject);
CREATE INDEX item_i_a_id ON item (i_a_id);
CREATE INDEX order_line_ol_i_id ON order_line (ol_i_id);
CREATE INDEX order_line_ol_o_id ON order_line (ol_o_id);
CREATE INDEX country_co_name ON country (co_name);
CREATE INDEX orders_o_c_id ON orders (o_c_id);
CREATE INDEX scl_i_id ON shopping_cart_line (scl_i_id);

-- Two more for SQLite (tpcw.md 1.11 suggestion): New Products and Order Display.
CREATE INDEX item_subject_pub_date_title ON item (i_subject, i_pub_date DESC, i_title);
CREATE INDEX orders_c_id_date_id ON orders (o_c_id, o_date, o_id);
