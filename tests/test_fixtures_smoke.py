from conftest import Db


def test_each_server_gives_a_fresh_database_of_its_major(db: Db) -> None:
    assert db.scalar("select current_setting('server_version_num')::int / 10000") == db.server.major
    assert db.scalar("select count(*) from pg_class where relnamespace = 'public'::regnamespace") == 0
