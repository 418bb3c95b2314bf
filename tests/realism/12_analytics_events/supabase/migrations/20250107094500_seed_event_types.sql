-- Lookup rows the client SDK refers to by name; ids follow insertion order (1..6).
insert into public.event_types (name, description)
values
  ('page_view', 'A page was shown'),
  ('sign_up', 'Account created'),
  ('sign_in', 'Session started'),
  ('checkout_started', 'Cart submitted'),
  ('checkout_completed', 'Payment succeeded'),
  ('feature_used', 'properties.feature names the feature');
