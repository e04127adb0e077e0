//! The XML tree of a VirtualBox `.vbox`: parsed with its comments and
//! the text between elements' children kept, so the snapshot side can
//! write it back, and read by the VM reader. DTDs and entities other than
//! the predefined ones and character references are refused; the size,
//! element count and nesting depth are bounded.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::vbox::{MAX_DEPTH, MAX_ELEMENTS};
use super::vmx::MAX_CONFIG_BYTES;
use crate::error::{Error, Result, Scheme};

/// A node of the document.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    El(El),
    Text(String),
    Comment(String),
}

/// An element: its name as written (prefix kept), attributes in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct El {
    /// The name as written.
    pub(crate) name: String,
    /// Attributes in document order, values unescaped.
    pub(crate) attrs: Vec<(String, String)>,
    /// Child elements, text and comments in order.
    pub(crate) kids: Vec<Node>,
}

/// The local part of a possibly prefixed name.
pub(crate) fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

impl El {
    pub(crate) fn new(name: &str) -> El {
        El {
            name: name.to_owned(),
            ..El::default()
        }
    }
    pub(crate) fn is(&self, name: &str) -> bool {
        local(&self.name) == name
    }
    pub(crate) fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| local(a).eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn set_attr(&mut self, k: &str, v: &str) {
        match self
            .attrs
            .iter_mut()
            .find(|(a, _)| local(a).eq_ignore_ascii_case(k))
        {
            Some(a) => a.1 = v.to_owned(),
            None => self.attrs.push((k.to_owned(), v.to_owned())),
        }
    }
    pub(crate) fn remove_attr(&mut self, k: &str) {
        self.attrs
            .retain(|(a, _)| !local(a).eq_ignore_ascii_case(k));
    }
    pub(crate) fn els(&self) -> impl Iterator<Item = &El> {
        self.kids.iter().filter_map(|n| match n {
            Node::El(e) => Some(e),
            _ => None,
        })
    }
    pub(crate) fn els_mut(&mut self) -> impl Iterator<Item = &mut El> {
        self.kids.iter_mut().filter_map(|n| match n {
            Node::El(e) => Some(e),
            _ => None,
        })
    }
    /// The child elements named `name` (local part).
    pub(crate) fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.els().filter(move |e| e.is(name))
    }
    /// The element's own text (its text nodes joined).
    pub(crate) fn text(&self) -> String {
        self.kids
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
    pub(crate) fn child(&self, name: &str) -> Option<&El> {
        self.els().find(|e| e.is(name))
    }
    pub(crate) fn child_mut(&mut self, name: &str) -> Option<&mut El> {
        self.els_mut().find(|e| e.is(name))
    }
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.kids
            .iter()
            .position(|n| matches!(n, Node::El(e) if e.is(name)))
    }
    /// The child `name`, made (appended) when absent.
    pub(crate) fn child_or_new(&mut self, name: &str) -> &mut El {
        let at = match self.index_of(name) {
            Some(i) => i,
            None => {
                self.kids.push(Node::El(El::new(name)));
                self.kids.len() - 1
            }
        };
        match self.kids.get_mut(at) {
            Some(Node::El(e)) => e,
            // Unreachable: `at` indexes an element by construction.
            _ => unreachable_el(),
        }
    }
}

/// For an element a caller has checked to be there.
#[allow(clippy::panic)]
pub(crate) fn unreachable_el() -> ! {
    panic!("index of an element names an element")
}

/// The top-level element named `name` (local part) of a parsed document.
pub(crate) fn root<'a>(doc: &'a [Node], name: &str) -> Option<&'a El> {
    doc.iter().find_map(|n| match n {
        Node::El(e) if e.is(name) => Some(e),
        _ => None,
    })
}

/// The top-level element named `name`, to change.
pub(crate) fn root_mut<'a>(doc: &'a mut [Node], name: &str) -> Option<&'a mut El> {
    doc.iter_mut().find_map(|n| match n {
        Node::El(e) if e.is(name) => Some(e),
        _ => None,
    })
}

/// An invalid-document error at `offset`.
pub(crate) fn bad(what: impl Into<String>, offset: u64) -> Error {
    Error::invalid(Scheme::Vm, what).at(offset)
}

/// A predefined entity's or character reference's text.
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix('x') {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

/// Parses the document into its top-level nodes (comments and the root
/// element), refusing DTDs, undefined entities and oversized documents.
pub(crate) fn parse(text: &[u8]) -> Result<Vec<Node>> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::limit(
            Scheme::Vm,
            "configuration bytes",
            text.len() as u64,
            MAX_CONFIG_BYTES,
        ));
    }
    let mut reader = Reader::from_reader(text);
    // Text is kept whole (spaces around `&amp;` and the like included);
    // the indentation between elements is dropped by `settle`.
    reader.config_mut().trim_text(false);
    let mut stack: Vec<El> = vec![El::default()];
    let mut count = 0usize;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("XML: {e}"), reader.error_position()))?;
        let open = |e: &quick_xml::events::BytesStart<'_>| -> Result<El> {
            let mut el = El {
                name: xml_name(e.name().as_ref(), "element", pos)?,
                ..El::default()
            };
            for a in e.attributes() {
                let a = a.map_err(|e| bad(format!("XML attribute: {e}"), pos))?;
                let key = xml_name(a.key.as_ref(), "attribute", pos)?;
                let v = a
                    .unescape_value()
                    .map_err(|e| bad(format!("XML attribute value: {e}"), pos))?;
                el.attrs.push((key, v.into_owned()));
            }
            Ok(el)
        };
        let text_into = |stack: &mut Vec<El>, s: &str| {
            if let Some(top) = stack.last_mut() {
                if let Some(Node::Text(t)) = top.kids.last_mut() {
                    t.push_str(s);
                } else {
                    top.kids.push(Node::Text(s.to_owned()));
                }
            }
        };
        if matches!(
            event,
            Event::Start(_) | Event::Empty(_) | Event::End(_) | Event::Comment(_) | Event::Eof
        ) {
            if let Some(top) = stack.last_mut() {
                settle(top);
            }
        }
        match event {
            Event::DocType(_) => {
                return Err(bad(
                    "XML document type declarations (where entities are defined) are refused",
                    pos,
                ))
            }
            Event::Start(_) | Event::Empty(_) if count >= MAX_ELEMENTS => {
                return Err(Error::limit(
                    Scheme::Vm,
                    "XML elements",
                    count as u64 + 1,
                    MAX_ELEMENTS as u64,
                )
                .at(pos))
            }
            Event::Start(_) | Event::Empty(_) if stack.len() > MAX_DEPTH => {
                return Err(Error::limit(
                    Scheme::Vm,
                    "XML nesting depth",
                    stack.len() as u64,
                    MAX_DEPTH as u64,
                )
                .at(pos))
            }
            Event::Start(e) => {
                count += 1;
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                count += 1;
                let el = open(&e)?;
                if let Some(top) = stack.last_mut() {
                    top.kids.push(Node::El(el));
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| bad("XML: unbalanced end tag", pos))?;
                match stack.last_mut() {
                    Some(top) => top.kids.push(Node::El(el)),
                    None => return Err(bad("XML: unbalanced end tag", pos)),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| bad(format!("XML text: {e}"), pos))?;
                text_into(&mut stack, &s);
            }
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let c = entity(&name).ok_or_else(|| {
                    bad(
                        format!(
                            "XML entity &{name}; is not predefined (entities are not expanded)"
                        ),
                        pos,
                    )
                })?;
                text_into(&mut stack, &c.to_string());
            }
            Event::CData(t) => text_into(&mut stack, &String::from_utf8_lossy(&t)),
            Event::Comment(c) => {
                if let Some(top) = stack.last_mut() {
                    top.kids
                        .push(Node::Comment(String::from_utf8_lossy(&c).into_owned()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match (stack.pop(), stack.is_empty()) {
        (Some(root), true) => Ok(root.kids),
        _ => Err(bad("XML: unclosed elements at the end", text.len() as u64)),
    }
}

/// `raw` as an element or attribute name, refused unless it is an XML
/// name (a letter, `_` or `:` first, then also digits, `-` and `.`;
/// characters beyond ASCII are taken as name characters), so that the
/// tree writes back as a document that parses.
fn xml_name(raw: &[u8], what: &str, pos: u64) -> Result<String> {
    let refuse = || {
        bad(
            format!(
                "XML {what} name {:?} is not a name",
                String::from_utf8_lossy(raw)
            ),
            pos,
        )
    };
    let name = std::str::from_utf8(raw).map_err(|_| refuse())?;
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':' || !c.is_ascii());
    let rest_ok = chars
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.') || !c.is_ascii());
    if first_ok && rest_ok {
        Ok(name.to_owned())
    } else {
        Err(refuse())
    }
}

/// Ends the text run at the end of `el`: dropped when only white space
/// (indentation), else trimmed at both ends.
fn settle(el: &mut El) {
    if let Some(Node::Text(t)) = el.kids.last_mut() {
        let trimmed = t.trim();
        if trimmed.is_empty() {
            el.kids.pop();
        } else if trimmed.len() != t.len() {
            *t = trimmed.to_owned();
        }
    }
}

/// Parses `data` as a `.vbox` tree and writes it back: a document that
/// parses is written as text that parses again to the same text.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn round_trip(data: &[u8]) {
    if let Ok(doc) = parse(data) {
        let text = serialize(&doc);
        match parse(text.as_bytes()) {
            Ok(again) => assert_eq!(serialize(&again), text, "a second write differs"),
            Err(e) => {
                // The written text may exceed the size limit only when
                // escaping grew it past the limit.
                assert!(
                    text.len() as u64 > MAX_CONFIG_BYTES,
                    "written text does not parse: {e}"
                );
            }
        }
    }
}

fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

fn write_nodes(nodes: &[Node], depth: usize, out: &mut String) {
    for n in nodes {
        let pad = "  ".repeat(depth);
        match n {
            Node::Comment(c) => {
                out.push_str(&format!("{pad}<!--{c}-->\n"));
            }
            Node::Text(t) => {
                out.push_str(&format!("{pad}{}\n", escape(t, false)));
            }
            Node::El(e) => {
                out.push_str(&pad);
                out.push('<');
                out.push_str(&e.name);
                for (k, v) in &e.attrs {
                    out.push_str(&format!(" {k}=\"{}\"", escape(v, true)));
                }
                match e.kids.as_slice() {
                    [] => out.push_str("/>\n"),
                    [Node::Text(t)] => {
                        out.push_str(&format!(">{}</{}>\n", escape(t, false), e.name));
                    }
                    kids => {
                        out.push_str(">\n");
                        write_nodes(kids, depth + 1, out);
                        out.push_str(&format!("{pad}</{}>\n", e.name));
                    }
                }
            }
        }
    }
}

pub(crate) fn serialize(doc: &[Node]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n");
    write_nodes(doc, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn tree_round_trips_with_escapes_and_comments() {
        let text = br#"<?xml version="1.0"?>
<!-- keep me -->
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.16-linux">
  <Machine name="a &amp; b" uuid="{X}">
    <Snapshot uuid="{S}" name="one"><Description>d &lt; e</Description></Snapshot>
  </Machine>
</VirtualBox>"#;
        let doc = parse(text).unwrap();
        let out = serialize(&doc);
        assert!(out.contains("<!-- keep me -->"), "{out}");
        assert!(out.contains("name=\"a &amp; b\""), "{out}");
        assert!(out.contains("<Description>d &lt; e</Description>"), "{out}");
        let again = serialize(&parse(out.as_bytes()).unwrap());
        assert_eq!(out, again);
        let doc = parse(b"<a><d>one &amp; two\n three </d></a>").unwrap();
        let out = serialize(&doc);
        assert!(out.contains("<d>one &amp; two\n three</d>"), "{out}");
        round_trip(out.as_bytes());
    }

    #[test]
    fn hostile_documents_are_refused() {
        let e = parse(b"<!DOCTYPE x [<!ENTITY a \"b\">]><VirtualBox/>").unwrap_err();
        assert!(e.to_string().contains("document type"), "{e}");
        let e = parse(b"<VirtualBox>&a;</VirtualBox>").unwrap_err();
        assert!(e.to_string().contains("not predefined"), "{e}");
        let deep = "<a>".repeat(MAX_DEPTH + 3);
        let e = parse(deep.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert!(parse(b"<a><b></a>").is_err());
    }

    #[test]
    fn elements_and_attributes_without_a_name_are_refused() {
        // `<` and `/>` with only line feeds between: an element whose name
        // is empty, which would be written back as `</>`.
        let e = parse(b"<\n\n\n/>").unwrap_err();
        assert!(e.to_string().contains("is not a name"), "{e}");
        round_trip(b"<\n\n\n/>");
        for bad_name in [&b"<1a/>"[..], b"<a -x=\"1\"/>", b"<a><.b/></a>"] {
            let e = parse(bad_name).unwrap_err();
            assert!(e.to_string().contains("is not a name"), "{e}");
        }
        let doc = parse("<vbox:Machine a.b-c=\"1\" _d=\"2\"><Ünïcode/></vbox:Machine>".as_bytes())
            .unwrap();
        round_trip(serialize(&doc).as_bytes());
    }
}
