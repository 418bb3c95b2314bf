-- Presence now knows "away" (idle for 10 minutes).
alter type public.user_status add value 'AWAY' before 'OFFLINE';
