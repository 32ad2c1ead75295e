//! `cargo xtask sizeclasses` end to end: runs the built binary and reads its
//! output and exit status.

use std::process::{Command, Output};

/// Go 1.9.2's `class_to_size` (`runtime/sizeclasses.go`; quoted by
/// `seeds/003_*.txt`), class 0 first.
const GO_CLASS_TO_SIZE: [u64; 67] = [
    0, 8, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352,
    384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048,
    2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728,
    10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672,
    32768,
];
/// Go 1.9.2's `class_to_allocnpages`, class 0 first.
const GO_CLASS_TO_ALLOCNPAGES: [u64; 67] = [
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 4, 5, 6, 1, 7, 6, 5, 4, 3, 5, 7, 2, 9, 7, 5, 8, 3,
    10, 7, 4,
];

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask")
}

fn stdout(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> &str {
    std::str::from_utf8(&out.stderr).unwrap()
}

/// The table's rows: the first five columns as integers (max-waste% is
/// checked separately).
fn rows(text: &str) -> Vec<[u64; 5]> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 6, "{l}");
            let waste: f64 = cols[5].parse().unwrap();
            assert!((0.0..100.0).contains(&waste), "{l}");
            std::array::from_fn(|i| cols[i].parse().unwrap())
        })
        .collect()
}

#[test]
fn go_1_9_table_matches_go() {
    let out = xtask(&["sizeclasses", "--go1.9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("# gomalloc size classes: page 8192, max small 32768"),
        "{text}"
    );
    assert!(
        text.lines().next().unwrap().contains("67 classes"),
        "{text}"
    );
    let rows = rows(text);
    assert_eq!(rows.len(), 66);
    let classes: Vec<u64> = rows.iter().map(|r| r[0]).collect();
    let sizes: Vec<u64> = rows.iter().map(|r| r[1]).collect();
    let pages: Vec<u64> = rows.iter().map(|r| r[2] / 8192).collect();
    assert_eq!(classes, (1..67).collect::<Vec<u64>>());
    assert_eq!(sizes, GO_CLASS_TO_SIZE[1..]);
    assert_eq!(pages, GO_CLASS_TO_ALLOCNPAGES[1..]);
    for [_, size, span, objects, tail] in rows {
        assert_eq!((objects, tail), (span / size, span % size));
    }
}

#[test]
fn default_is_gomallocs_table() {
    let out = xtask(&["sizeclasses"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("16-byte step from 64, spans of at least 8 pages and 8 objects; 85 classes"),
        "{text}"
    );
    let table = rows(text);
    assert_eq!(table.len(), 84);
    let sizes: Vec<u64> = table.iter().map(|r| r[1]).collect();
    assert_eq!(sizes[..8], [8, 16, 24, 32, 40, 48, 56, 64]);
    // Spans of at least 64 KiB holding at least 8 objects.
    assert!(table.iter().all(|r| r[2] >= 65536 && r[3] >= 8), "{text}");
    // The Go preset with gomalloc's three changes is gomalloc's table.
    let same = xtask(&[
        "sizeclasses",
        "--go1.9",
        "--min-align16",
        "64",
        "--min-span-pages",
        "8",
        "--min-objects",
        "8",
    ]);
    assert_eq!(stdout(&same), text);
    // And with Go's minimums, Go's classes from 80 bytes on.
    let go_spans = xtask(&["sizeclasses", "--go1.9", "--min-align16", "64"]);
    let go_sizes: Vec<u64> = rows(stdout(&go_spans)).iter().map(|r| r[1]).collect();
    assert_eq!(go_sizes[8..], GO_CLASS_TO_SIZE[6..]);
}

#[test]
fn custom_parameters() {
    let out = xtask(&[
        "sizeclasses",
        "--page-size",
        "4096",
        "--max-small=16384",
        "--max-waste",
        "1/4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = rows(stdout(&out));
    assert_eq!(rows.last().unwrap()[1], 16384);
    for [_, size, span, _, tail] in rows {
        assert_eq!(span % 4096, 0);
        assert!(tail * 4 <= span, "size {size}");
    }
}

#[test]
fn bad_parameters_exit_2_with_the_typed_error() {
    let out = xtask(&["sizeclasses", "--page-size", "3000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("page size 3000 must be a power of two"),
        "{err}"
    );
    assert!(err.contains("PageSize(3000)"), "{err}");

    let out = xtask(&[
        "sizeclasses",
        "--max-waste",
        "0.000001",
        "--max-small",
        "262144",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("TooManyClasses"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["sizeclasses", "--bogus"],
        &["sizeclasses", "--page-size"],
    ] {
        let out = xtask(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("usage: cargo xtask"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn help_exits_0() {
    let out = xtask(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("sizeclasses"));
    let out = xtask(&["sizeclasses", "--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("--max-waste F"));
}
