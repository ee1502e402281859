//! From an uploaded file to its text: the content decoded (UTF-8, base64 or a data URL),
//! its format recognised by name or MIME type, and its text extracted with the crate made
//! for the format — `html2text`, `pdf-extract` (every page up to the configured limit),
//! `zip` + `quick-xml` for DOCX, `calamine` for XLSX.
//!
//! Extraction is CPU work on untrusted bytes: callers run it on a blocking thread and treat
//! a panic inside a parser as "the file cannot be read" (`super::ingest`).

use std::io::{Cursor, Read};

use base64::Engine as _;

/// Limits of one ingest call (`knowledge` section of the config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_files: usize,
    pub max_file_bytes: usize,
    pub pdf_max_pages: usize,
}

impl Limits {
    pub fn from_config(config: &argent_proto::config::KnowledgeConfig) -> Self {
        Limits {
            max_files: config.max_files.unwrap_or(100).clamp(1, 10_000),
            max_file_bytes: config
                .max_file_bytes
                .unwrap_or(25 * 1024 * 1024)
                .clamp(1024, 1 << 30),
            pdf_max_pages: config.pdf_max_pages.unwrap_or(2000).clamp(1, 100_000),
        }
    }
}

/// The formats the library reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Xlsx,
}

impl Format {
    /// Named as `documentType` reports it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Xlsx => "xlsx",
        }
    }

    /// Sent as text (UTF-8) rather than base64.
    fn is_text(self) -> bool {
        matches!(self, Format::Text | Format::Markdown | Format::Html)
    }

    /// By MIME type first (what the client says), then by the file name's extension.
    /// `None`: a binary format we do not read.
    pub fn detect(file_name: &str, mime: Option<&str>) -> Option<Format> {
        let mime = mime.map(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        let by_mime = match mime.as_deref() {
            Some("application/pdf") => Some(Format::Pdf),
            Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document") => {
                Some(Format::Docx)
            }
            Some(
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                | "application/vnd.ms-excel.sheet.macroenabled.12",
            ) => Some(Format::Xlsx),
            Some("text/markdown" | "text/x-markdown") => Some(Format::Markdown),
            Some("text/html" | "application/xhtml+xml") => Some(Format::Html),
            _ => None,
        };
        if by_mime.is_some() {
            return by_mime;
        }
        let extension = file_name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase())
            .unwrap_or_default();
        let by_extension = match extension.as_str() {
            "pdf" => Some(Format::Pdf),
            "docx" => Some(Format::Docx),
            "xlsx" | "xlsm" => Some(Format::Xlsx),
            "md" | "markdown" | "mdx" => Some(Format::Markdown),
            "html" | "htm" | "xhtml" => Some(Format::Html),
            // Formats we know we cannot read: refused by name rather than read as text.
            "doc" | "xls" | "ppt" | "pptx" | "odt" | "ods" | "rtf" | "zip" | "gz" | "png"
            | "jpg" | "jpeg" | "gif" | "webp" | "mp3" | "mp4" | "wav" | "exe" => return None,
            _ => None,
        };
        match (by_extension, mime.as_deref()) {
            (Some(format), _) => Some(format),
            // Anything else that calls itself text, or says nothing, is read as text if
            // its bytes are UTF-8 (checked when decoding).
            (None, Some(m))
                if m.starts_with("text/")
                    || m.ends_with("json")
                    || m.ends_with("xml")
                    || m.ends_with("yaml") =>
            {
                Some(Format::Text)
            }
            (None, None | Some("" | "application/octet-stream")) => Some(Format::Text),
            (None, Some(_)) => None,
        }
    }
}

/// What the text of a compressed format (DOCX, XLSX) may grow to, in multiples of the
/// file size limit.
const INFLATION: usize = 4;

/// A file's text and what was learned about it on the way.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub format: Format,
    pub text: String,
    /// A title found inside the file (Markdown heading, HTML `<title>`, DOCX core title).
    pub title: Option<String>,
    /// PDF pages: read, and in the file.
    pub pages: Option<(usize, usize)>,
}

/// Why a file was not read: the text of its `errors[]` entry.
pub type Refusal = String;

/// The bytes of `content`: a data URL's payload, base64 for binary formats, the text
/// itself for text formats (a text file may also come base64-encoded as a data URL).
fn decode(content: &str, format: Format) -> Result<Vec<u8>, Refusal> {
    if let Some(rest) = content.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| "malformed data URL (no comma)".to_string())?;
        return if meta.ends_with(";base64") {
            base64_bytes(data)
        } else {
            Ok(percent_decode(data))
        };
    }
    if format.is_text() {
        Ok(content.as_bytes().to_vec())
    } else {
        base64_bytes(content)
    }
}

fn base64_bytes(data: &str) -> Result<Vec<u8>, Refusal> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes()))
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(compact.trim_end_matches('=').as_bytes())
        })
        .map_err(|_| {
            "content is not valid base64 (binary files are sent base64-encoded)".to_string()
        })
}

/// `%XX` escapes of a non-base64 data URL.
fn percent_decode(data: &str) -> Vec<u8> {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(Ok(b)) = data
                .get(i + 1..i + 3)
                .map(|hex| u8::from_str_radix(hex, 16))
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Decodes and reads one file. Blocking (parsers are synchronous).
pub fn extract(
    file_name: &str,
    mime: Option<&str>,
    content: &str,
    limits: &Limits,
) -> Result<Extracted, Refusal> {
    let format = Format::detect(file_name, mime).ok_or_else(|| {
        format!(
            "unsupported file type{}: text, Markdown, HTML, PDF, DOCX and XLSX are read",
            mime.map(|m| format!(" {m}")).unwrap_or_default()
        )
    })?;
    // A base64 text is 4/3 of its bytes: refuse an obviously oversized one before decoding.
    let estimated = if format.is_text() {
        content.len()
    } else {
        content.len() / 4 * 3
    };
    if estimated > limits.max_file_bytes + 3 {
        return Err(too_large(estimated, limits));
    }
    let bytes = decode(content, format)?;
    if bytes.len() > limits.max_file_bytes {
        return Err(too_large(bytes.len(), limits));
    }
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let mut extracted = match format {
        Format::Text | Format::Markdown => {
            let text = String::from_utf8(bytes).map_err(|_| {
                "the file is not UTF-8 text (binary files need a supported type)".to_string()
            })?;
            if text.contains('\0') {
                return Err("the file is binary, not text".into());
            }
            Extracted {
                title: (format == Format::Markdown)
                    .then(|| markdown_title(&text))
                    .flatten(),
                text,
                format,
                pages: None,
            }
        }
        Format::Html => html(&bytes)?,
        Format::Pdf => pdf(&bytes, limits.pdf_max_pages)?,
        Format::Docx => docx(&bytes, limits.max_file_bytes.saturating_mul(INFLATION))?,
        Format::Xlsx => xlsx(&bytes, limits.max_file_bytes.saturating_mul(INFLATION))?,
    };
    extracted.text = normalize(&extracted.text);
    if extracted.text.trim().is_empty() {
        return Err(match format {
            Format::Pdf => "no text found in the PDF (a scanned PDF needs OCR first)".into(),
            _ => "no text found in the file".into(),
        });
    }
    Ok(extracted)
}

/// Upstream's message, with the setting that raises the limit.
fn too_large(size: usize, limits: &Limits) -> Refusal {
    format!(
        "file too large: {size} bytes (limit: {}; knowledge.maxFileBytes)",
        limits.max_file_bytes
    )
}

/// Line ends unified, trailing spaces dropped, runs of blank lines cut to one.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.replace("\r\n", "\n").replace('\r', "\n").lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

/// The first `# ` heading of a Markdown text.
fn markdown_title(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("# "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn html(bytes: &[u8]) -> Result<Extracted, Refusal> {
    let source = String::from_utf8_lossy(bytes);
    let title = between_ci(&source, "<title", "</title>")
        .and_then(|t| t.split_once('>').map(|(_, t)| t.trim().to_string()))
        .filter(|t| !t.is_empty());
    let text = html2text::config::plain()
        .string_from_read(bytes, 10_000)
        .map_err(|e| format!("HTML could not be read: {e}"))?;
    Ok(Extracted {
        format: Format::Html,
        text,
        title,
        pages: None,
    })
}

/// The text between `open` (its start) and `close`, ASCII case-insensitively.
fn between_ci<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find(open)? + open.len();
    let end = start + lower[start..].find(close)?;
    text.get(start..end)
}

fn pdf(bytes: &[u8], max_pages: usize) -> Result<Extracted, Refusal> {
    let mut doc = pdf_extract::Document::load_mem(bytes)
        .map_err(|e| format!("the PDF could not be read: {e}"))?;
    if doc.is_encrypted() {
        // Many PDFs are "encrypted" with an empty user password; others are not ours to read.
        doc.decrypt("")
            .map_err(|_| "the PDF is password-protected".to_string())?;
    }
    let pages = doc.get_pages();
    let total = pages.len();
    let mut text = String::new();
    let mut read = 0;
    let mut unreadable = 0;
    for &number in pages.keys().take(max_pages) {
        let mut page = String::new();
        let result = {
            let mut output = pdf_extract::PlainTextOutput::new(&mut page);
            pdf_extract::output_doc_page(&doc, &mut output, number)
        };
        match result {
            Ok(()) => {
                text.push_str(&page);
                text.push_str("\n\n");
                read += 1;
            }
            // One bad page costs that page, not the document.
            Err(err) => {
                unreadable += 1;
                tracing::info!(page = number, %err, "PDF page not readable; skipped");
            }
        }
    }
    if total > max_pages || unreadable > 0 {
        tracing::info!(
            total,
            read,
            unreadable,
            max_pages,
            "PDF read in part (knowledge.pdfMaxPages, unreadable pages)"
        );
    }
    Ok(Extracted {
        format: Format::Pdf,
        text,
        title: None,
        pages: Some((read, total)),
    })
}

fn docx(bytes: &[u8], budget: usize) -> Result<Extracted, Refusal> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("the DOCX could not be opened: {e}"))?;
    // What the parts may inflate to, together: a zip bomb stops here.
    let mut budget = budget as u64;
    let body = read_part(&mut archive, "word/document.xml", &mut budget)?
        .ok_or_else(|| "the DOCX has no word/document.xml".to_string())?;
    let mut text = docx_text(&body)?;
    drop(body);
    for part in ["word/footnotes.xml", "word/endnotes.xml"] {
        if let Some(xml) = read_part(&mut archive, part, &mut budget)? {
            text.push_str("\n\n");
            text.push_str(&docx_text(&xml)?);
        }
    }
    let title = read_part(&mut archive, "docProps/core.xml", &mut budget)?
        .and_then(|core| element_text(&core, "title"))
        .filter(|t| !t.trim().is_empty());
    Ok(Extracted {
        format: Format::Docx,
        text,
        title,
        pages: None,
    })
}

/// One part of the package, inflated within what is left of `budget`.
fn read_part(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    budget: &mut u64,
) -> Result<Option<String>, Refusal> {
    let file = match archive.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("{name} could not be read: {e}")),
    };
    let mut xml = String::new();
    file.take(*budget + 1)
        .read_to_string(&mut xml)
        .map_err(|e| format!("{name} could not be read: {e}"))?;
    if xml.len() as u64 > *budget {
        return Err("the DOCX inflates to more than 4 × knowledge.maxFileBytes".into());
    }
    *budget -= xml.len() as u64;
    Ok(Some(xml))
}

/// The text of WordprocessingML: runs' `w:t`, tabs, breaks, one line per paragraph.
fn docx_text(xml: &str) -> Result<String, Refusal> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == "t" => in_text = true,
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => out.push('\n'),
                _ => {}
            },
            Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                "tab" => out.push('\t'),
                "br" | "cr" => out.push('\n'),
                _ => {}
            },
            Ok(Event::Text(t)) if in_text => out.push_str(t.as_ref()),
            Ok(Event::GeneralRef(r)) if in_text => out.push_str(&reference(&r)),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("the DOCX XML is malformed: {e}")),
        }
    }
    Ok(out)
}

/// The text of an XML reference: a character reference, or one of XML's five entities
/// (OOXML parts declare no others).
fn reference(r: &quick_xml::events::BytesRef) -> String {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return c.to_string();
    }
    match r.as_ref() {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => "",
    }
    .to_string()
}

/// The text of the first element named `local` (any namespace).
fn element_text(xml: &str, local: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    let mut out = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == local => inside = true,
            Event::End(e) if e.local_name().as_ref() == local => return Some(out),
            Event::Text(t) if inside => out.push_str(t.as_ref()),
            Event::GeneralRef(r) if inside => out.push_str(&reference(&r)),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Cells of one workbook read at most: a sheet's cells are streamed (a dense range of a
/// sheet with two far-apart cells would ask for billions).
const MAX_XLSX_CELLS: usize = 5_000_000;

fn xlsx(bytes: &[u8], text_budget: usize) -> Result<Extracted, Refusal> {
    use calamine::{DataRef, Reader};
    let mut workbook: calamine::Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|e| format!("the XLSX could not be opened: {e}"))?;
    let mut text = String::new();
    let mut cells = 0usize;
    for name in workbook.sheet_names().to_vec() {
        let mut reader = workbook
            .worksheet_cells_reader(&name)
            .map_err(|e| format!("sheet {name:?} could not be read: {e}"))?;
        text.push_str(&format!("## {name}\n"));
        let mut row = None;
        while let Some(cell) = reader
            .next_cell()
            .map_err(|e| format!("sheet {name:?} could not be read: {e}"))?
        {
            cells += 1;
            if cells > MAX_XLSX_CELLS || text.len() > text_budget {
                return Err(format!(
                    "the XLSX holds more than {MAX_XLSX_CELLS} cells or {text_budget} bytes of text"
                ));
            }
            let value = match cell.get_value() {
                DataRef::Empty => continue,
                DataRef::Int(n) => n.to_string(),
                DataRef::Float(f) => f.to_string(),
                DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
                DataRef::SharedString(s) => s.to_string(),
                DataRef::Bool(b) => b.to_string(),
                DataRef::DateTime(d) => d.to_string(),
                DataRef::Error(e) => e.to_string(),
            };
            let (r, _) = cell.get_position();
            match row {
                Some(current) if current == r => text.push('\t'),
                Some(_) => text.push('\n'),
                None => {}
            }
            row = Some(r);
            text.push_str(value.trim());
        }
        text.push_str("\n\n");
    }
    Ok(Extracted {
        format: Format::Xlsx,
        text,
        title: None,
        pages: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_files: 10,
        max_file_bytes: 1 << 20,
        pdf_max_pages: 100,
    };

    #[test]
    fn formats_by_mime_then_extension() {
        assert_eq!(Format::detect("a.pdf", None), Some(Format::Pdf));
        assert_eq!(
            Format::detect("a", Some("application/pdf")),
            Some(Format::Pdf)
        );
        assert_eq!(Format::detect("notes.MD", None), Some(Format::Markdown));
        assert_eq!(Format::detect("a.rs", None), Some(Format::Text));
        assert_eq!(Format::detect("a.png", None), None);
        assert_eq!(Format::detect("blob", Some("image/png")), None);
    }

    #[test]
    fn text_in_every_encoding() {
        let plain = extract("a.txt", None, "hello  \r\nworld", &LIMITS).unwrap();
        assert_eq!(plain.text, "hello\nworld");
        let b64 = base64::engine::general_purpose::STANDARD.encode("hello");
        let url = extract(
            "a.txt",
            None,
            &format!("data:text/plain;base64,{b64}"),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(url.text, "hello");
        assert!(extract("a.pdf", None, "not base64 !!", &LIMITS).is_err());
        assert!(extract("a.txt", None, "", &LIMITS).is_err());
    }

    #[test]
    fn markdown_and_html_titles() {
        let md = extract("a.md", None, "intro\n# The Title\nbody", &LIMITS).unwrap();
        assert_eq!(md.title.as_deref(), Some("The Title"));
        let html = extract(
            "a.html",
            None,
            "<html><head><TITLE>Page</TITLE></head><body><p>One</p><script>x</script><p>Two &amp; three</p></body></html>",
            &LIMITS,
        )
        .unwrap();
        assert_eq!(html.title.as_deref(), Some("Page"));
        assert!(
            html.text.contains("One") && html.text.contains("Two & three"),
            "{}",
            html.text
        );
    }

    #[test]
    fn oversized_files_are_refused_before_decoding() {
        let big = "a".repeat((1 << 20) + 1);
        assert!(extract("a.txt", None, &big, &LIMITS)
            .unwrap_err()
            .contains("limit"));
    }

    #[test]
    fn docx_paragraphs_and_entities() {
        let xml = r#"<w:document xmlns:w="x"><w:body><w:p><w:r><w:t>Alpha &amp; beta</w:t></w:r><w:r><w:tab/><w:t xml:space="preserve"> gamma</w:t></w:r></w:p><w:p><w:r><w:t>Delta</w:t></w:r></w:p></w:body></w:document>"#;
        assert_eq!(docx_text(xml).unwrap(), "Alpha & beta\t gamma\nDelta\n");
    }

    /// A minimal XLSX: one sheet of inline-string and number cells at `(reference, cell)`.
    fn xlsx_with(cells: &[(&str, &str)]) -> String {
        use std::io::Write;
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let sheet_cells: String = cells
            .iter()
            .map(|(at, value)| match value.parse::<f64>() {
                Ok(_) => format!(r#"<c r="{at}"><v>{value}</v></c>"#),
                Err(_) => format!(r#"<c r="{at}" t="inlineStr"><is><t>{value}</t></is></c>"#),
            })
            .collect();
        let rows: String = {
            // One <row> per row number, cells in order.
            let mut by_row: std::collections::BTreeMap<u32, String> = Default::default();
            for (cell, (at, _)) in sheet_cells.split("</c>").zip(cells) {
                let row: u32 = at
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .parse()
                    .unwrap();
                by_row
                    .entry(row)
                    .or_default()
                    .push_str(&format!("{cell}</c>"));
            }
            by_row
                .iter()
                .map(|(r, c)| format!(r#"<row r="{r}">{c}</row>"#))
                .collect()
        };
        let parts = [
            ("[Content_Types].xml", r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.to_string()),
            ("_rels/.rels", r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_string()),
            ("xl/workbook.xml", r#"<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Budget" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_string()),
            ("xl/_rels/workbook.xml.rels", r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.to_string()),
            ("xl/worksheets/sheet1.xml", format!(r#"<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#)),
        ];
        for (name, body) in parts {
            zip.start_file(name, options).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    #[test]
    fn xlsx_cells_are_read_row_by_row_and_sparse_sheets_stay_small() {
        let book = xlsx_with(&[
            ("A1", "Item"),
            ("B1", "Cost"),
            ("A2", "Lanterns"),
            ("B2", "42"),
        ]);
        let read = extract("budget.xlsx", None, &book, &LIMITS).unwrap();
        assert_eq!(read.text, "## Budget\nItem\tCost\nLanterns\t42");
        // Two cells a whole sheet apart: read as two cells, not as a 17-billion-cell range.
        let sparse = xlsx_with(&[("A1", "first"), ("XFD1048576", "last")]);
        let read = extract("sparse.xlsx", None, &sparse, &LIMITS).unwrap();
        assert_eq!(read.text, "## Budget\nfirst\nlast");
    }

    #[test]
    fn garbage_in_binary_formats_is_refused_not_a_panic() {
        let junk = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4 garbage");
        assert!(extract("a.pdf", None, &junk, &LIMITS).is_err());
        let junk = base64::engine::general_purpose::STANDARD.encode(b"PK\x03\x04 nope");
        assert!(extract("a.docx", None, &junk, &LIMITS).is_err());
        assert!(extract("a.xlsx", None, &junk, &LIMITS).is_err());
    }
}
