//! Office documents written for the knowledge-library tests, small but real enough for the
//! node-agent's extractors: a PDF with one page per text (Type1 Helvetica, one of the 14
//! standard fonts every reader knows without embedded metrics) and a minimal DOCX.

use std::io::{Cursor, Write};

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};

/// Characters per line of text drawn on a PDF page.
const PDF_LINE: usize = 90;

/// A PDF with one page per string, each drawn as lines of text (BT/Tf/Td/Tj/ET).
pub fn pdf_with_pages(pages: &[&str]) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let mut kids: Vec<Object> = Vec::with_capacity(pages.len());
    for text in pages {
        let mut operations = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 11.into()]),
            Operation::new("Td", vec![72.into(), 770.into()]),
        ];
        for (i, line) in wrap(text, PDF_LINE).into_iter().enumerate() {
            if i > 0 {
                operations.push(Operation::new("Td", vec![0.into(), (-14).into()]));
            }
            operations.push(Operation::new(
                "Tj",
                vec![Object::string_literal(line.into_bytes())],
            ));
        }
        operations.push(Operation::new("ET", vec![]));
        let content = Content { operations };
        let content_id = doc.add_object(Stream::new(
            dictionary! {},
            content.encode().expect("PDF content encodes"),
        ));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
            "MediaBox" => a4(),
            "Resources" => dictionary! {
                "Font" => dictionary! {
                    "F1" => font_id,
                },
            },
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    let pages_dict = dictionary! {
        "Type" => "Pages",
        "Kids" => kids,
        "Count" => count,
        "MediaBox" => a4(),
    };
    doc.objects.insert(pages_id, Object::Dictionary(pages_dict));
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("PDF writes to memory");
    out
}

/// An A4 page in points.
fn a4() -> Vec<Object> {
    vec![0.into(), 0.into(), 595.into(), 842.into()]
}

/// `text` in lines of at most `width` characters, cut between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A DOCX (WordprocessingML in a zip) with one paragraph per string.
pub fn docx(paragraphs: &[&str]) -> Vec<u8> {
    const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;
    const RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;
    let mut body = String::new();
    for paragraph in paragraphs {
        body.push_str(r#"<w:p><w:r><w:t xml:space="preserve">"#);
        body.push_str(&xml_escape(paragraph));
        body.push_str("</w:t></w:r></w:p>");
    }
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    );
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, part) in [
        ("[Content_Types].xml", CONTENT_TYPES),
        ("_rels/.rels", RELS),
        ("word/document.xml", document.as_str()),
    ] {
        writer.start_file(name, options).expect("zip entry starts");
        writer.write_all(part.as_bytes()).expect("zip entry writes");
    }
    writer.finish().expect("zip finishes").into_inner()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdf_has_its_pages() {
        let bytes = pdf_with_pages(&["first page", "second page", "third page"]);
        assert!(bytes.starts_with(b"%PDF-1.5"));
        let doc = Document::load_mem(&bytes).expect("lopdf reads back what it wrote");
        assert_eq!(doc.get_pages().len(), 3);
    }

    #[test]
    fn a_docx_is_a_zip_with_the_document_part() {
        let bytes = docx(&["Alpha & beta", "Gamma"]);
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip");
        let mut xml = String::new();
        std::io::Read::read_to_string(
            &mut archive.by_name("word/document.xml").expect("the part"),
            &mut xml,
        )
        .unwrap();
        assert!(
            xml.contains("<w:t xml:space=\"preserve\">Alpha &amp; beta</w:t>"),
            "{xml}"
        );
    }

    #[test]
    fn lines_wrap_between_words() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }
}
