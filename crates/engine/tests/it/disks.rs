use std::fs;
use std::os::unix::fs::FileExt;

use rsvault_engine::{BackupOptions, Source};

use crate::common::*;

#[test]
fn disk_image_zero_regions_cost_almost_nothing_and_restore_identically() {
    let fx = Fixture::new();
    let img = fx.path("disk0.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(48 << 20).unwrap();
    f.write_all_at(&random_bytes(1 << 20, 1), 0).unwrap();
    f.write_all_at(&random_bytes(1 << 20, 2), 20 << 20).unwrap();
    f.write_all_at(&random_bytes(4096, 3), (48 << 20) - 4096)
        .unwrap();
    drop(f);
    // A second disk that is allocated zeros, not holes.
    let img2 = fx.path("disk1.img");
    fs::write(&img2, vec![0u8; 8 << 20]).unwrap();

    let ctx = TestCtx::default();
    let out = rsvault_engine::backup(
        &fx.repo,
        &Source::Disks {
            paths: vec![img.clone(), img2.clone()],
        },
        &BackupOptions::default(),
        &ctx,
    )
    .unwrap();
    assert_eq!(out.files, 2);
    assert_eq!(out.bytes_total, 56 << 20);
    assert!(
        fx.repo_size() < 3 << 20,
        "repository is {} bytes",
        fx.repo_size()
    );
    let last = ctx.progress.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.bytes_total, 56 << 20);
    assert_eq!(last.bytes_done, 56 << 20);

    let target = fx.path("t");
    fx.restore(&out.snapshot_id, &["disk0.img"], &target);
    assert_eq!(
        fs::read(target.join("disk0.img")).unwrap(),
        fs::read(&img).unwrap()
    );
    assert!(
        allocated(&target.join("disk0.img")) < 8 << 20,
        "restore is not sparse"
    );
    assert!(!target.join("disk1.img").exists());

    // Unchanged image with its snapshot as parent: nothing added.
    let again = rsvault_engine::backup(
        &fx.repo,
        &Source::Disks {
            paths: vec![img.clone(), img2],
        },
        &BackupOptions {
            parent: Some(out.snapshot_id.clone()),
            ..BackupOptions::default()
        },
        &ctx,
    )
    .unwrap();
    assert_eq!(again.bytes_added, 0);
}

#[test]
fn missing_disk_is_source_unavailable() {
    let fx = Fixture::new();
    let err = rsvault_engine::backup(
        &fx.repo,
        &Source::Disks {
            paths: vec![fx.path("nope.img")],
        },
        &BackupOptions::default(),
        &TestCtx::default(),
    );
    assert!(
        matches!(err, Err(rsvault_engine::Error::SourceUnavailable(_))),
        "{err:?}"
    );
}

#[test]
fn block_device_is_read_as_a_stream_and_always_re_read() {
    let fx = Fixture::new();
    let img = fx.path("backing.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&random_bytes(1 << 20, 11), 1 << 20).unwrap();
    drop(f);
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output();
    let dev = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            eprintln!("SKIP block_device test: cannot attach a loop device here");
            return;
        }
    };
    let detach = || {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &dev])
            .status();
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let name = std::path::Path::new(&dev)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let source = Source::Disks {
            paths: vec![dev.clone().into()],
        };
        let first = rsvault_engine::backup(
            &fx.repo,
            &source,
            &BackupOptions::default(),
            &TestCtx::default(),
        )
        .unwrap();
        assert_eq!(first.bytes_total, 8 << 20);
        // Change the device's blocks: its timestamps do not move, the next backup must notice.
        let devf = fs::OpenOptions::new().write(true).open(&dev).unwrap();
        devf.write_all_at(&random_bytes(4096, 12), 0).unwrap();
        devf.sync_all().unwrap();
        drop(devf);
        let second = rsvault_engine::backup(
            &fx.repo,
            &source,
            &BackupOptions {
                parent: Some(first.snapshot_id.clone()),
                ..BackupOptions::default()
            },
            &TestCtx::default(),
        )
        .unwrap();
        assert!(second.bytes_added > 0);
        let t = fx.path("t");
        fx.restore(&second.snapshot_id, &[&name], &t);
        assert_eq!(fs::read(t.join(&name)).unwrap(), fs::read(&dev).unwrap());
    }));
    detach();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
