//! The store conformance suite, in the default schema and in a tenant schema.

use annals_postgres::PostgresStore;
use sqlx::PgPool;

annals::store_conformance!(
    #[sqlx::test(migrations = false)]
    fn(pool: PgPool) -> {
        let store = PostgresStore::from_pool(pool);
        store.migrate().await.unwrap();
        store
    }
);

mod in_a_tenant_schema {
    use annals_postgres::PostgresStore;
    use sqlx::PgPool;

    annals::store_conformance!(
        #[sqlx::test(migrations = false)]
        fn(pool: PgPool) -> {
            let store = PostgresStore::from_pool(pool).with_schema("Tenant_7").unwrap();
            store.migrate().await.unwrap();
            store
        }
    );
}

mod command_ids {
    use annals_postgres::PostgresStore;
    use sqlx::PgPool;

    annals::command_id_conformance!(
        #[sqlx::test(migrations = false)]
        fn(pool: PgPool) -> {
            let store = PostgresStore::from_pool(pool).with_schema("Tenant_7").unwrap();
            store.migrate().await.unwrap();
            store
        }
    );
}
