//! Corpus readers over real files: discovery order, each format, and errors that
//! name the file and the line, row or field at fault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrochat_text::corpus::{discover, for_each_document, CorpusOptions, Format, Position};
use ferrochat_text::TextError;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn texts(inputs: &[PathBuf], opts: &CorpusOptions) -> Result<Vec<(String, String)>, TextError> {
    let mut out = Vec::new();
    for_each_document(inputs, opts, |d| {
        out.push((d.text, d.source.to_string()));
        Ok(())
    })?;
    Ok(out)
}

fn error_of(inputs: &[PathBuf]) -> String {
    texts(inputs, &CorpusOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// Writes a one-column Parquet file, a row group per slice of `groups`.
pub fn write_parquet(path: &Path, schema_text: &str, groups: &[&[Option<&str>]]) -> TestResult {
    let schema = Arc::new(parse_message_type(schema_text)?);
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path)?, schema, props)?;
    for rows in groups {
        let mut group = writer.next_row_group()?;
        if let Some(mut col) = group.next_column()? {
            let values: Vec<ByteArray> =
                rows.iter().flatten().map(|s| ByteArray::from(*s)).collect();
            let defs: Vec<i16> = rows.iter().map(|r| i16::from(r.is_some())).collect();
            let optional = schema_text.contains("OPTIONAL");
            col.typed::<ByteArrayType>().write_batch(
                &values,
                optional.then_some(&defs[..]),
                None,
            )?;
            col.close()?;
        }
        group.close()?;
    }
    writer.close()?;
    Ok(())
}

#[test]
fn discovery_is_recursive_sorted_and_skips_others() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    std::fs::create_dir_all(root.join("b/sub"))?;
    std::fs::create_dir_all(root.join(".hidden"))?;
    for name in [
        "b/sub/z.txt",
        "b/a.JSONL",
        "a.md",
        "README",
        "b/data.parquet",
        ".hidden/x.txt",
    ] {
        std::fs::write(root.join(name), "x")?;
    }
    let found = discover(&[root.to_path_buf()])?;
    let names: Vec<_> = found
        .iter()
        .map(|f| f.path.strip_prefix(root).map(|p| p.to_path_buf()))
        .collect::<Result<_, _>>()?;
    let want: Vec<PathBuf> = ["a.md", "b/a.JSONL", "b/data.parquet", "b/sub/z.txt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(names, want);
    assert_eq!(found[1].format, Format::JsonLines);
    assert_eq!(found[2].format, Format::Parquet);
    Ok(())
}

#[test]
fn unknown_extension_and_empty_input_are_explained() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let csv = tmp.path().join("data.csv");
    std::fs::write(&csv, "a,b")?;
    let msg = error_of(&[csv]);
    assert!(
        msg.contains("data.csv: unsupported file type") && msg.contains(".jsonl"),
        "{msg}"
    );
    let msg = error_of(&[tmp.path().join("empty_dir_missing")]);
    assert!(
        msg.contains("cannot read") && msg.contains("empty_dir_missing"),
        "{msg}"
    );
    std::fs::create_dir(tmp.path().join("empty"))?;
    let msg = error_of(&[tmp.path().join("empty")]);
    assert!(
        msg.contains("no input files found in") && msg.contains("empty"),
        "{msg}"
    );
    assert!(error_of(&[]).contains("no paths given"));
    Ok(())
}

#[test]
fn jsonl_reads_the_field_and_names_bad_lines() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("docs.jsonl");
    std::fs::write(&path, "{\"text\":\"one\"}\n\n{\"text\":null}\n{\"text\":\"two\",\"id\":2}\n{\"text\": \"three\"\n")?;
    let msg = error_of(std::slice::from_ref(&path));
    assert!(msg.contains("docs.jsonl:5: malformed JSON"), "{msg}");

    std::fs::write(&path, "{\"text\":\"one\"}\n{\"body\":\"two\"}\n")?;
    let msg = error_of(std::slice::from_ref(&path));
    assert!(
        msg.contains("docs.jsonl:2: no field \"text\"") && msg.contains("\"body\""),
        "{msg}"
    );

    std::fs::write(
        &path,
        "{\"body\":\"one\"}\n\n{\"body\":null}\n{\"body\":\"two\",\"id\":2}\n",
    )?;
    let opts = CorpusOptions {
        json_field: "body".to_string(),
        ..CorpusOptions::default()
    };
    let got = texts(std::slice::from_ref(&path), &opts)?;
    let sources: Vec<&str> = got
        .iter()
        .map(|(_, s)| s.rsplit(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(sources, ["1", "4"]);
    Ok(())
}

#[test]
fn non_utf8_names_file_and_line() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let txt = tmp.path().join("latin1.txt");
    std::fs::write(&txt, b"first line\nsecond caf\xE9\n")?;
    let msg = error_of(std::slice::from_ref(&txt));
    assert!(
        msg.contains("latin1.txt:2: not valid UTF-8") && msg.contains("byte offset 21"),
        "{msg}"
    );
    let jsonl = tmp.path().join("latin1.jsonl");
    std::fs::write(&jsonl, b"{\"text\":\"ok\"}\n{\"text\":\"caf\xE9\"}\n")?;
    let msg = error_of(&[jsonl]);
    assert!(msg.contains("latin1.jsonl:2: not valid UTF-8"), "{msg}");
    Ok(())
}

#[test]
fn big_text_files_stream_as_paragraphs() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("big.txt");
    let paragraphs: Vec<String> = (0..50)
        .map(|i| format!("paragraph {i}\nstill {i}"))
        .collect();
    std::fs::write(&path, paragraphs.join("\n\n"))?;
    let opts = CorpusOptions {
        split_text_above: 100,
        ..CorpusOptions::default()
    };
    let mut lines = Vec::new();
    let stats = for_each_document(std::slice::from_ref(&path), &opts, |d| {
        lines.push(d.source.position.clone());
        assert!(d.text.len() <= 100);
        Ok(())
    })?;
    assert_eq!(stats.documents, 50);
    assert_eq!(lines[3], Position::Line(10));
    let whole = texts(&[path], &CorpusOptions::default())?;
    assert_eq!(whole.len(), 1);
    Ok(())
}

#[test]
fn parquet_reads_rows_and_skips_nulls() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("t.parquet");
    let schema = "message schema { OPTIONAL BYTE_ARRAY text (UTF8); }";
    write_parquet(
        &path,
        schema,
        &[&[Some("a"), None, Some("b")], &[Some("c")]],
    )?;
    let mut got = Vec::new();
    let stats = for_each_document(
        std::slice::from_ref(&path),
        &CorpusOptions::default(),
        |d| {
            got.push((d.text, d.source.position));
            Ok(())
        },
    )?;
    let row = |row_group, row| Position::Row { row_group, row };
    assert_eq!(
        got,
        vec![
            ("a".into(), row(0, 0)),
            ("b".into(), row(0, 2)),
            ("c".into(), row(1, 3))
        ]
    );
    assert_eq!(stats.skipped, 1);
    Ok(())
}

#[test]
fn parquet_column_errors_name_the_column() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("t.parquet");
    write_parquet(
        &path,
        "message schema { REQUIRED BYTE_ARRAY body (UTF8); }",
        &[&[Some("a")]],
    )?;
    let msg = error_of(std::slice::from_ref(&path));
    assert!(
        msg.contains("t.parquet: no top-level column \"text\" (columns: \"body\")"),
        "{msg}"
    );

    let ints = tmp.path().join("ints.parquet");
    let schema = Arc::new(parse_message_type(
        "message schema { REQUIRED INT32 text; }",
    )?);
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(&ints)?,
        schema,
        Arc::new(WriterProperties::builder().build()),
    )?;
    let mut group = w.next_row_group()?;
    if let Some(mut col) = group.next_column()? {
        col.typed::<Int32Type>().write_batch(&[1, 2], None, None)?;
        col.close()?;
    }
    group.close()?;
    w.close()?;
    let msg = error_of(&[ints]);
    assert!(
        msg.contains("ints.parquet: column \"text\" holds INT32 values"),
        "{msg}"
    );

    let junk = tmp.path().join("junk.parquet");
    std::fs::write(&junk, "not parquet at all")?;
    let msg = error_of(&[junk]);
    assert!(msg.contains("junk.parquet: cannot read Parquet"), "{msg}");
    Ok(())
}
