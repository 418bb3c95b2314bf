-- Stripe added "paused" (pause_collection / trial without payment method).
alter type public.subscription_status add value 'paused';
