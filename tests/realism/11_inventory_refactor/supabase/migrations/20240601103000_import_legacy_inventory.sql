-- One-off data import from the legacy spreadsheet (exported 2024-05-31).
insert into public.items (sku, name, qty, warehouse, created_at)
values
  ('BOLT-M6',  'Hex bolt M6x30',       1200, 'Berlin',  '2024-05-31 00:00:00+00'),
  ('NUT-M6',   'Hex nut M6',           3400, 'Berlin',  '2024-05-31 00:00:00+00'),
  ('WASH-6',   'Washer 6.4 mm',        5000, 'Hamburg', '2024-05-31 00:00:00+00'),
  ('DRILL-8',  'HSS drill bit 8 mm',     75, 'Hamburg', '2024-05-31 00:00:00+00'),
  ('GLUE-PU',  'PU glue 500 g',          40, 'Munich',  '2024-05-31 00:00:00+00');
