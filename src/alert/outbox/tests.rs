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

fn saved(check: &str, key: &str) -> SavedAlert {
    SavedAlert {
        route: "r".into(),
        check: check.into(),
        dedupe_key: key.into(),
        started_ms: 1,
        last_sent_ms: 2,
    }
}

/// A trigger (on the writer's own connection) makes some writes fail.
async fn inject(o: &Outbox, sql: &'static str) {
    o.call(move |conn, _| {
        conn.execute_batch(sql)?;
        Ok(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_commit_writes_the_rows_and_the_states_together() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(dir.path()).await.unwrap();
    let n = Notification::test_sample();
    o.save_alert(&saved("old", "k0")).await.unwrap();
    o.commit(vec![
        Write::SaveAlert(saved("db", "k1")),
        Write::Enqueue {
            notifiers: vec!["a".into(), "b".into()],
            note: n.clone(),
        },
        Write::DeleteAlert {
            route: "r".into(),
            check: "old".into(),
            key: Some("other".into()),
        },
    ])
    .await
    .unwrap();
    assert_eq!((o.depth("a"), o.depth("b")), (1, 1));
    // A delete with a key that no longer matches leaves the alert.
    assert_eq!(
        o.load_alerts().await.unwrap(),
        vec![saved("db", "k1"), saved("old", "k0")]
    );
    o.commit(vec![Write::DeleteAlert {
        route: "r".into(),
        check: "old".into(),
        key: None,
    }])
    .await
    .unwrap();
    assert_eq!(o.load_alerts().await.unwrap(), vec![saved("db", "k1")]);
    assert_eq!(o.next("a", 0, 10).await.unwrap()[0].note, n);
}

#[tokio::test]
async fn a_commit_whose_enqueue_fails_leaves_no_saved_state() {
    let dir = tempfile::tempdir().unwrap();
    let o = Arc::new(Outbox::open(dir.path()).await.unwrap());
    inject(
        &o,
        "CREATE TRIGGER fail_bad BEFORE INSERT ON outbox WHEN NEW.notifier = 'bad'
         BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .await;
    let n = Notification::test_sample();
    // The save comes first and succeeds inside the request; the enqueue's second row
    // fails, so the save and the first row are undone with it.
    let r = o
        .commit(vec![
            Write::SaveAlert(saved("db", "k1")),
            Write::Enqueue {
                notifiers: vec!["good".into(), "bad".into()],
                note: n.clone(),
            },
        ])
        .await;
    assert!(r.is_err(), "{r:?}");
    assert!(o.load_alerts().await.unwrap().is_empty());
    assert_eq!((o.depth("good"), o.depth("bad")), (0, 0));
    assert!(o.next("good", 0, 10).await.unwrap().is_empty());
    // Requests in the same batch as a failing one are not undone.
    let tasks: Vec<_> = ["good", "bad", "good"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let (o, n) = (o.clone(), n.clone());
            tokio::spawn(async move {
                o.commit(vec![
                    Write::SaveAlert(saved(&format!("c{i}"), name)),
                    Write::Enqueue {
                        notifiers: vec![name.to_string()],
                        note: n,
                    },
                ])
                .await
            })
        })
        .collect();
    let mut ok = Vec::new();
    for t in tasks {
        ok.push(t.await.unwrap().is_ok());
    }
    assert_eq!(ok, vec![true, false, true]);
    let checks: Vec<String> = o
        .load_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.check)
        .collect();
    assert_eq!(checks, vec!["c0", "c2"]);
    assert_eq!(o.depth("good"), 2);
}

#[tokio::test]
async fn a_commit_whose_forget_fails_leaves_its_resolved_unqueued() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(dir.path()).await.unwrap();
    o.save_alert(&saved("db", "k1")).await.unwrap();
    inject(
        &o,
        "CREATE TRIGGER fail_forget BEFORE DELETE ON alert_state
         BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .await;
    let mut n = Notification::test_sample();
    n.status = crate::alert::NoteStatus::Resolved;
    let r = o
        .commit(vec![
            Write::Enqueue {
                notifiers: vec!["hook".into()],
                note: n,
            },
            Write::DeleteAlert {
                route: "r".into(),
                check: "db".into(),
                key: Some("k1".into()),
            },
        ])
        .await;
    assert!(r.is_err());
    assert_eq!(o.depth("hook"), 0);
    assert_eq!(o.load_alerts().await.unwrap(), vec![saved("db", "k1")]);
}
