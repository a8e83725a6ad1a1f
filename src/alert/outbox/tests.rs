//! Unit tests of the outbox and its writer thread.
use super::*;

#[tokio::test]
async fn enqueue_next_remove_go_through_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let n = Notification::test_sample();
    {
        let o = Outbox::open(dir.path()).await.unwrap();
        let thread = o
            .call(|_, _| Ok(std::thread::current().name().map(str::to_string)))
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("lifeline-outbox"));
        assert_eq!(o.path(), dir.path().join(DB_FILE));
        o.enqueue(&["a".into(), "b".into()], &n).await.unwrap();
        o.enqueue(&["a".into()], &n).await.unwrap();
        assert_eq!((o.depth("a"), o.depth("b")), (2, 1));
    }
    // Rows survive a reopen, in order; depths are counted again.
    let o = Arc::new(Outbox::open(dir.path()).await.unwrap());
    assert_eq!((o.depth("a"), o.depth("b")), (2, 1));
    let rows = o.next("a", 0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].id < rows[1].id);
    assert_eq!(rows[0].note, n);
    o.remove(rows[0].id).await.unwrap();
    assert_eq!(o.depth("a"), 1);
    o.failed(rows[1].id, 3, "boom").await.unwrap();
    assert_eq!(o.attempts_of(rows[1].id).await, Some(3));
    // Many callers at once: batched, every one answered.
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let o = o.clone();
            let n = n.clone();
            tokio::spawn(async move { o.enqueue(&["c".into()], &n).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 1);
    }
    assert_eq!(o.depth("c"), 200);
    assert_eq!(o.purge_notifier("c").await.unwrap(), 200);
    assert_eq!(o.depth("c"), 0);
}

#[tokio::test]
async fn a_failing_request_does_not_undo_the_others_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let o = Arc::new(Outbox::open(dir.path()).await.unwrap());
    let n = Notification::test_sample();
    // Only inserts for notifier "bad" fail.
    o.call(|conn, _| {
        conn.execute_batch(
            "CREATE TRIGGER fail_bad BEFORE INSERT ON outbox WHEN NEW.notifier = 'bad'
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )?;
        Ok(())
    })
    .await
    .unwrap();
    let tasks: Vec<_> = ["good", "bad", "good"]
        .into_iter()
        .map(|name| {
            let (o, n) = (o.clone(), n.clone());
            tokio::spawn(async move { o.enqueue(&[name.to_string()], &n).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().is_ok());
    }
    assert_eq!(results, vec![true, false, true]);
    assert_eq!((o.depth("good"), o.depth("bad")), (2, 0));
    assert_eq!(o.next("good", 0, 10).await.unwrap().len(), 2);
}
