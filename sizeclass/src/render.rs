//! Text rendering of a table, in the layout of the comment Go's
//! `mksizeclasses` writes at the top of `sizeclasses.go`.

use core::fmt::{self, Write};

use crate::SizeClasses;

impl SizeClasses {
    /// Writes the table as text: two `#` header lines (parameters, class
    /// count, column names), then one line per small class (class 0 is not
    /// listed) with six whitespace-separated numbers:
    ///
    /// | column       | meaning                                                        |
    /// |--------------|----------------------------------------------------------------|
    /// | `class`      | class index                                                    |
    /// | `bytes/obj`  | object size                                                    |
    /// | `bytes/span` | span size                                                      |
    /// | `objects`    | objects per span                                               |
    /// | `tail-waste` | bytes left at the end of the span                              |
    /// | `max-waste%` | worst-case waste, in percent with 2 decimals (below)            |
    ///
    /// `max-waste%` is Go's: the share of the span lost when every object
    /// holds the smallest request that maps to its class (one byte more than
    /// the previous class's size), tail included:
    /// `100 * ((size - prev - 1) * objects + tail) / span_bytes`.
    ///
    /// Writes only to `out`; allocates nothing itself.
    ///
    /// # Errors
    ///
    /// Whatever `out` returns.
    pub fn render<W: Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        let p = self.params();
        writeln!(
            out,
            "# gomalloc size classes: page {}, max small {}, waste bound {}, 16-byte step from {}, \
             spans of at least {} pages and {} objects; {} classes (class 0, large objects, not listed)",
            p.page_size,
            p.max_small,
            p.max_waste.as_f64(),
            p.min_align16,
            p.min_span_pages,
            p.min_objects,
            self.len(),
        )?;
        writeln!(
            out,
            "# class  bytes/obj  bytes/span  objects  tail-waste  max-waste%"
        )?;
        let mut prev = 0;
        for c in 1..self.len() {
            let size = self.size_of_class(c);
            let span = self.span_bytes_of_class(c);
            let objects = self.objects_of_class(c);
            let tail = span - objects * size;
            let max_waste = 100.0 * ((size - prev - 1) * objects + tail) as f64 / span as f64;
            writeln!(
                out,
                "{c:7} {size:10} {span:11} {objects:8} {tail:11} {max_waste:11.2}"
            )?;
            prev = size;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    use crate::{Params, SIZE_CLASSES, SizeClasses};

    fn rows(text: &str) -> Vec<Vec<f64>> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
            .collect()
    }

    #[test]
    fn gomalloc_table_text() {
        let mut text = String::new();
        SIZE_CLASSES.render(&mut text).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "# gomalloc size classes: page 8192, max small 32768, waste bound 0.125, \
             16-byte step from 64, spans of at least 8 pages and 8 objects; 85 classes \
             (class 0, large objects, not listed)"
        );
        assert_eq!(
            lines.next().unwrap(),
            "# class  bytes/obj  bytes/span  objects  tail-waste  max-waste%"
        );
        // Rows checked by hand: 65536 = 8192 * 8, a 1-byte request wastes
        // 7/8; for 24 bytes 65536 = 2730 * 24 + 16, and requests of 17
        // bytes waste (24-16-1)*2730+16 = 19126 bytes, 29.18 %.
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["1", "8", "65536", "8192", "0", "87.50"]
        );
        lines.next();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["3", "24", "65536", "2730", "16", "29.18"]
        );
        // 32 KiB objects, eight to a 256 KiB span; requests of 31745 bytes
        // (one above the previous class) waste 1023 * 8 / 262144 = 3.12 %.
        let last: Vec<_> = text.lines().last().unwrap().split_whitespace().collect();
        assert_eq!(last, ["84", "32768", "262144", "8", "0", "3.12"]);
    }

    #[test]
    fn rows_agree_with_the_table() {
        for p in [Params::GOMALLOC, Params::GO_1_9_2] {
            let t = SizeClasses::new(p).unwrap();
            let mut text = String::new();
            t.render(&mut text).unwrap();
            let rows = rows(&text);
            assert_eq!(rows.len(), t.len() - 1);
            for (i, row) in rows.iter().enumerate() {
                let c = i + 1;
                let as_usize: Vec<usize> = row[..5].iter().map(|&x| x as usize).collect();
                let span = t.span_bytes_of_class(c);
                let objects = t.objects_of_class(c);
                assert_eq!(
                    as_usize,
                    [
                        c,
                        t.size_of_class(c),
                        span,
                        objects,
                        span - objects * t.size_of_class(c)
                    ]
                );
                // Waste is below the bound for the tail and below 100 %.
                assert!(row[5] >= 0.0 && row[5] < 100.0, "{row:?}");
            }
        }
    }

    /// Go 1.9.2's `sizeclasses.go` comment lists these max-waste figures.
    #[test]
    fn go_max_waste_column() {
        let t = SizeClasses::new(Params::GO_1_9_2).unwrap();
        let mut text = String::new();
        t.render(&mut text).unwrap();
        let waste: Vec<f64> = rows(&text).iter().map(|r| r[5]).collect();
        assert_eq!(waste[..4], [87.50, 43.75, 46.88, 31.52]);
        assert_eq!(waste[65], 12.50);
    }

    /// A sink that fails after `n` writes: the error is passed on.
    struct Failing(usize);
    impl core::fmt::Write for Failing {
        fn write_str(&mut self, _: &str) -> core::fmt::Result {
            if self.0 == 0 {
                return Err(core::fmt::Error);
            }
            self.0 -= 1;
            Ok(())
        }
    }

    #[test]
    fn sink_errors_propagate() {
        assert!(SIZE_CLASSES.render(&mut Failing(0)).is_err());
        assert!(SIZE_CLASSES.render(&mut Failing(50)).is_err());
        assert!(SIZE_CLASSES.render(&mut Failing(usize::MAX)).is_ok());
    }
}
