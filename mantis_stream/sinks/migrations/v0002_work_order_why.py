"""Schema version 2: why a work order was opened, and its resolution.

SQL in a Python module (not a .sql file) so that it ships in every install.
Never edit once released: add v0003_*.py.
"""

SQL = r"""
-- mantis-stream PostgreSQL schema, version 2.
--
-- why:         one line a technician reads (the features that left the healthy
--              reference and by how much; the RUL against its threshold).
-- defect_band: the bearing defect band that grew (BPFO, BPFI, BSF, FTF), when known.
-- resolution:  what closed the order (a maintenance event), with closed_at.
ALTER TABLE work_orders
    ADD COLUMN why         text NOT NULL DEFAULT '',
    ADD COLUMN defect_band text,
    ADD COLUMN resolution  text;
"""
