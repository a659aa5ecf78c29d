//! Dialogs (RFC 3261 §12): identity, CSeq counters, remote target, route set, and the
//! construction and matching of in-dialog requests. Pure data; no I/O, no time.
//!
//! UAC: create with [`Dialog::uac`] from the INVITE and the first 1xx-with-tag or 2xx,
//! then feed later responses to [`Dialog::handle_response`]. UAS: create with
//! [`Dialog::uas`] from the INVITE, report the final response with
//! [`Dialog::on_response_sent`]. Both: [`Dialog::handle_request`] for incoming in-dialog
//! requests, [`Dialog::create_request`] / [`Dialog::create_ack`] for outgoing ones, and
//! send them towards [`Dialog::next_hop`].

use super::message::{HeaderName, Method, NameAddr, Request, Response, Uri, Via};
use super::parse::SipParseError;

/// (Call-ID, local tag, remote tag) as seen from this side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog an incoming request belongs to (we are the UAS side of it: local = To
    /// tag, remote = From tag). `None` when the To header has no tag (not in a dialog).
    pub fn of_incoming_request(req: &Request) -> Option<DialogId> {
        let to = req.headers.to().ok()?;
        let from = req.headers.from().ok()?;
        Some(DialogId {
            call_id: req.headers.call_id().ok()?.to_string(),
            local_tag: to.tag()?.to_string(),
            remote_tag: from.tag().unwrap_or("").to_string(),
        })
    }
    /// The dialog an incoming response belongs to (local = From tag, remote = To tag).
    pub fn of_incoming_response(resp: &Response) -> Option<DialogId> {
        let to = resp.headers.to().ok()?;
        let from = resp.headers.from().ok()?;
        Some(DialogId {
            call_id: resp.headers.call_id().ok()?.to_string(),
            local_tag: from.tag().unwrap_or("").to_string(),
            remote_tag: to.tag()?.to_string(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uac,
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error(transparent)]
    Parse(#[from] SipParseError),
    #[error("a {0} response does not create a dialog")]
    NotDialogCreating(u16),
    #[error("the response has no To tag")]
    NoRemoteTag,
    #[error("the request does not belong to this dialog")]
    Mismatch,
    /// Answer 500 (RFC 3261 §12.2.2).
    #[error("CSeq {got} is not above the last remote CSeq {last}")]
    CSeqOutOfOrder { last: u32, got: u32 },
    #[error("the dialog is terminated")]
    Terminated,
}

/// Methods whose requests and 2xx responses carry a Contact that refreshes the target.
fn is_target_refresh(m: &Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

fn without_params(mut na: NameAddr) -> NameAddr {
    na.params.clear();
    na
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub role: Role,
    pub state: DialogState,
    pub call_id: String,
    pub local_tag: String,
    /// Empty for an RFC 2543 peer that sent no From tag.
    pub remote_tag: String,
    /// Our address of record (From in our requests), without tag.
    pub local_uri: NameAddr,
    /// The peer's address of record (To in our requests), without tag.
    pub remote_uri: NameAddr,
    /// Last CSeq we used; the next request uses one more. 0 = none sent yet.
    pub local_seq: u32,
    /// Last CSeq received from the peer.
    pub remote_seq: Option<u32>,
    /// Where requests go: the peer's Contact.
    pub remote_target: Uri,
    /// Proxies to route through, in the order to visit them.
    pub route_set: Vec<NameAddr>,
    /// `sips:` dialog (RFC 3261 §12.1.1).
    pub secure: bool,
    /// Our Contact, put in target-refresh requests and in responses.
    pub local_contact: Option<NameAddr>,
    /// CSeq number of the last INVITE we sent (what a 2xx ACK carries).
    pub invite_seq: u32,
}

impl Dialog {
    /// The UAC side, from our INVITE (or other dialog-creating request) and a 101–299
    /// response with a To tag. 1xx: an early dialog; 2xx: confirmed.
    pub fn uac(request: &Request, response: &Response) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&response.status) {
            return Err(DialogError::NotDialogCreating(response.status));
        }
        let to = response.headers.to()?;
        let remote_tag = to.tag().ok_or(DialogError::NoRemoteTag)?.to_string();
        let from = request.headers.from()?;
        let cseq = request.headers.cseq()?;
        let remote_target = match response.headers.contacts()?.into_iter().next() {
            Some(c) => c.uri,
            None => to.uri.clone(),
        };
        let mut route_set = response.headers.record_routes()?;
        route_set.reverse();
        let secure =
            matches!(&request.uri, Uri::Sip(u) if u.scheme == super::message::Scheme::Sips);
        Ok(Dialog {
            role: Role::Uac,
            state: if response.status < 200 {
                DialogState::Early
            } else {
                DialogState::Confirmed
            },
            call_id: request.headers.call_id()?.to_string(),
            local_tag: from.tag().unwrap_or("").to_string(),
            remote_tag,
            local_uri: without_params(from),
            remote_uri: without_params(request.headers.to()?),
            local_seq: cseq.seq,
            remote_seq: None,
            remote_target,
            route_set,
            secure,
            local_contact: request.headers.contacts()?.into_iter().next(),
            invite_seq: if request.method == Method::Invite {
                cseq.seq
            } else {
                0
            },
        })
    }

    /// The UAS side, from an incoming dialog-creating request; `local_tag` goes in the To
    /// of our responses. Early until [`Dialog::on_response_sent`] reports a 2xx.
    pub fn uas(
        request: &Request,
        local_tag: &str,
        local_contact: Option<NameAddr>,
    ) -> Result<Dialog, DialogError> {
        let from = request.headers.from()?;
        let to = request.headers.to()?;
        let cseq = request.headers.cseq()?;
        let remote_target = match request.headers.contacts()?.into_iter().next() {
            Some(c) => c.uri,
            None => from.uri.clone(),
        };
        let secure =
            matches!(&request.uri, Uri::Sip(u) if u.scheme == super::message::Scheme::Sips);
        Ok(Dialog {
            role: Role::Uas,
            state: DialogState::Early,
            call_id: request.headers.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().unwrap_or("").to_string(),
            local_uri: without_params(to),
            remote_uri: without_params(from),
            local_seq: 0,
            remote_seq: Some(cseq.seq),
            remote_target,
            route_set: request.headers.record_routes()?,
            secure,
            local_contact,
            invite_seq: 0,
        })
    }

    pub fn id(&self) -> DialogId {
        DialogId {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
        }
    }

    /// UAS: we sent a final response to the dialog-creating request.
    pub fn on_response_sent(&mut self, status: u16) {
        if self.state == DialogState::Early {
            if (200..300).contains(&status) {
                self.state = DialogState::Confirmed;
            } else if status >= 300 {
                self.state = DialogState::Terminated;
            }
        }
    }

    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// UAC: a response to a request of this dialog (the initial INVITE included).
    /// Confirms on 2xx (recomputing the route set from the 2xx, §13.2.2.4), refreshes
    /// the target from Contact, terminates on a failure of the initial request or on
    /// 481/408 (§12.2.1.2).
    pub fn handle_response(&mut self, response: &Response) -> Result<(), DialogError> {
        let method = response.headers.cseq()?.method;
        let status = response.status;
        if self.state == DialogState::Early && method == Method::Invite {
            if (200..300).contains(&status) {
                self.state = DialogState::Confirmed;
                if self.role == Role::Uac {
                    let mut rs = response.headers.record_routes()?;
                    rs.reverse();
                    self.route_set = rs;
                }
            } else if status >= 300 {
                self.state = DialogState::Terminated;
                return Ok(());
            }
        }
        if status == 481 || status == 408 {
            self.state = DialogState::Terminated;
            return Ok(());
        }
        if is_target_refresh(&method) && status > 100 && status < 300 {
            if let Some(c) = response.headers.contacts()?.into_iter().next() {
                self.remote_target = c.uri;
            }
        }
        Ok(())
    }

    /// Does `req` belong to this dialog (Call-ID, To tag = local tag, From tag = remote)?
    pub fn matches_request(&self, req: &Request) -> bool {
        DialogId::of_incoming_request(req).is_some_and(|id| id == self.id())
    }

    /// An incoming in-dialog request: checks identity and CSeq ordering, refreshes the
    /// target (INVITE/UPDATE/... with Contact) and ends the dialog on BYE. On
    /// [`DialogError::CSeqOutOfOrder`] answer 500; on [`DialogError::Mismatch`] 481.
    pub fn handle_request(&mut self, req: &Request) -> Result<(), DialogError> {
        if !self.matches_request(req) {
            return Err(DialogError::Mismatch);
        }
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        let cseq = req.headers.cseq()?;
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if cseq.seq <= last {
                    return Err(DialogError::CSeqOutOfOrder {
                        last,
                        got: cseq.seq,
                    });
                }
            }
            self.remote_seq = Some(cseq.seq);
        }
        if is_target_refresh(&req.method) {
            if let Some(c) = req.headers.contacts()?.into_iter().next() {
                self.remote_target = c.uri;
            }
        }
        if req.method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }

    /// Request-URI and Route set for the next request (RFC 3261 §12.2.1.1): loose
    /// routing when the first route has `;lr`, else strict routing (the first route
    /// becomes the Request-URI and the remote target the last Route).
    pub fn request_target(&self) -> (Uri, Vec<NameAddr>) {
        match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if first.uri.as_sip().is_none_or(|u| u.is_loose_router()) => {
                (self.remote_target.clone(), self.route_set.clone())
            }
            Some(first) => {
                let mut ruri = first.uri.clone();
                if let Uri::Sip(u) = &mut ruri {
                    u.headers.clear();
                }
                let mut routes: Vec<NameAddr> = self.route_set[1..].to_vec();
                routes.push(NameAddr::new(self.remote_target.clone()));
                (ruri, routes)
            }
        }
    }

    /// Where to send the next request: the first route, else the remote target. The
    /// shell resolves it (RFC 3263) to an address and transport.
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target)
    }

    fn build(&self, method: Method, seq: u32, via: &Via) -> Request {
        let (ruri, routes) = self.request_target();
        let mut r = Request::new(method.clone(), ruri);
        r.headers.push(HeaderName::VIA, via.to_string());
        r.headers.push(HeaderName::MAX_FORWARDS, "70");
        for route in routes {
            r.headers.push(HeaderName::ROUTE, route.to_string());
        }
        let mut from = self.local_uri.clone();
        if !self.local_tag.is_empty() {
            from.set_tag(&self.local_tag);
        }
        let mut to = self.remote_uri.clone();
        if !self.remote_tag.is_empty() {
            to.set_tag(&self.remote_tag);
        }
        r.headers.push(HeaderName::FROM, from.to_string());
        r.headers.push(HeaderName::TO, to.to_string());
        r.headers.push(HeaderName::CALL_ID, self.call_id.clone());
        r.headers.push(HeaderName::CSEQ, format!("{seq} {method}"));
        if is_target_refresh(&method) {
            if let Some(c) = &self.local_contact {
                r.headers.push(HeaderName::CONTACT, c.to_string());
            }
        }
        r
    }

    /// A new in-dialog request (BYE, re-INVITE, INFO, UPDATE, REFER, ...): the next
    /// local CSeq, tags, route set. The caller supplies the Via (with a fresh branch)
    /// and adds a body if any. ACK is [`Dialog::create_ack`]; CANCEL (of a re-INVITE)
    /// reuses the last INVITE's CSeq — better, cancel through
    /// [`super::transaction::TransactionLayer::cancel`], which copies the INVITE's Via.
    pub fn create_request(&mut self, method: Method, via: Via) -> Request {
        match method {
            Method::Ack => return self.create_ack(via),
            Method::Cancel => return self.build(Method::Cancel, self.invite_seq, &via),
            _ => {}
        }
        self.local_seq = self.local_seq.wrapping_add(1) & 0x7fff_ffff;
        if method == Method::Invite {
            self.invite_seq = self.local_seq;
        }
        self.build(method, self.local_seq, &via)
    }

    /// The ACK for a 2xx to our last INVITE (RFC 3261 §13.2.2.4): CSeq number of that
    /// INVITE, method ACK; a new branch in `via`.
    pub fn create_ack(&self, via: Via) -> Request {
        self.build(Method::Ack, self.invite_seq, &via)
    }

    /// A response to an in-dialog (or the dialog-creating) request: our To tag, and
    /// our Contact on 1xx/2xx to target-refresh requests.
    pub fn create_response(&self, req: &Request, status: u16) -> Response {
        let mut r = Response::from_request(req, status);
        if status > 100 {
            r.set_to_tag(&self.local_tag);
        }
        if status > 100 && status < 300 && is_target_refresh(&req.method) {
            if let Some(c) = &self.local_contact {
                r.headers.push(HeaderName::CONTACT, c.to_string());
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Host, SipMessage, Transport};
    use crate::sip::parse::parse_message;

    fn msg(s: &str) -> SipMessage {
        parse_message(s.replace('\n', "\r\n").as_bytes()).unwrap()
    }
    fn req(s: &str) -> Request {
        match msg(s) {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }
    fn resp(s: &str) -> Response {
        match msg(s) {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        }
    }
    fn via() -> Via {
        Via::new(
            Transport::Udp,
            Host::Domain("pbx.example.com".into()),
            None,
            "z9hG4bKnew",
        )
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\n\
Via: SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1\n\
Max-Forwards: 70\n\
From: \"PBX\" <sip:pbx@example.com>;tag=loc\n\
To: <sip:bob@example.com>\n\
Call-ID: dlg-1\n\
CSeq: 10 INVITE\n\
Contact: <sip:pbx@192.0.2.1:5060>\n\
Content-Length: 0\n\n";

    fn ok_200(rr: &str, contact: &str) -> Response {
        resp(&format!(
            "SIP/2.0 200 OK\n\
Via: SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1\n\
{rr}From: \"PBX\" <sip:pbx@example.com>;tag=loc\n\
To: <sip:bob@example.com>;tag=rem\n\
Call-ID: dlg-1\n\
CSeq: 10 INVITE\n\
{contact}Content-Length: 0\n\n"
        ))
    }

    #[test]
    fn uac_dialog_routes_in_reverse_and_builds_bye() {
        let invite = req(INVITE);
        let ok = ok_200(
            "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n",
            "Contact: <sip:bob@192.0.2.20:5070>\n",
        );
        let mut d = Dialog::uac(&invite, &ok).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(
            d.id(),
            DialogId {
                call_id: "dlg-1".into(),
                local_tag: "loc".into(),
                remote_tag: "rem".into()
            }
        );
        assert_eq!(DialogId::of_incoming_response(&ok), Some(d.id()));
        assert_eq!(
            d.route_set
                .iter()
                .map(|r| r.uri.to_string())
                .collect::<Vec<_>>(),
            ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        );
        assert_eq!(d.next_hop().to_string(), "sip:p1.example.com;lr");

        let ack = d.create_ack(via());
        assert_eq!(ack.uri.to_string(), "sip:bob@192.0.2.20:5070");
        assert_eq!(ack.headers.cseq().unwrap().to_string(), "10 ACK");

        let bye = d.create_request(Method::Bye, via());
        assert_eq!(bye.uri.to_string(), "sip:bob@192.0.2.20:5070");
        assert_eq!(bye.headers.cseq().unwrap().to_string(), "11 BYE");
        assert_eq!(bye.headers.from().unwrap().tag(), Some("loc"));
        assert_eq!(
            bye.headers.from().unwrap().display_name.as_deref(),
            Some("PBX")
        );
        assert_eq!(bye.headers.to().unwrap().tag(), Some("rem"));
        assert_eq!(bye.headers.call_id().unwrap(), "dlg-1");
        assert_eq!(
            bye.headers.get_all(&HeaderName::ROUTE).collect::<Vec<_>>(),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert!(!bye.headers.contains(&HeaderName::CONTACT));
        // The built request is a valid message.
        assert!(parse_message(&bye.to_bytes()).is_ok());

        let reinvite = d.create_request(Method::Invite, via());
        assert_eq!(reinvite.headers.cseq().unwrap().seq, 12);
        assert_eq!(d.create_ack(via()).headers.cseq().unwrap().seq, 12);
        assert_eq!(
            reinvite.headers.get(&HeaderName::CONTACT),
            Some("<sip:pbx@192.0.2.1:5060>")
        );
        let info = d.create_request(Method::Info, via());
        assert_eq!(info.headers.cseq().unwrap().to_string(), "13 INFO");
        let cancel = d.create_request(Method::Cancel, via());
        assert_eq!(cancel.headers.cseq().unwrap().to_string(), "12 CANCEL");
        let ack = d.create_request(Method::Ack, via());
        assert_eq!(ack.headers.cseq().unwrap().to_string(), "12 ACK");
        assert_eq!(
            d.create_request(Method::Bye, via())
                .headers
                .cseq()
                .unwrap()
                .seq,
            14
        );
    }

    #[test]
    fn uas_dialog_keeps_route_order_and_checks_cseq() {
        let invite = req(&INVITE.replace(
            "Contact: <sip:pbx@192.0.2.1:5060>\n",
            "Contact: <sip:pbx@192.0.2.1:5060>\nRecord-Route: <sip:p1.example.com;lr>\nRecord-Route: <sip:p2.example.com;lr>\n",
        ));
        let contact: NameAddr = "<sip:bob@192.0.2.20>".parse().unwrap();
        let mut d = Dialog::uas(&invite, "uas-tag", Some(contact)).unwrap();
        assert_eq!(d.state, DialogState::Early);
        let ringing = d.create_response(&invite, 180);
        assert_eq!(ringing.headers.to().unwrap().tag(), Some("uas-tag"));
        assert!(ringing.headers.contains(&HeaderName::RECORD_ROUTE));
        assert_eq!(
            ringing.headers.get(&HeaderName::CONTACT),
            Some("<sip:bob@192.0.2.20>")
        );
        d.on_response_sent(200);
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.remote_target.to_string(), "sip:pbx@192.0.2.1:5060");

        let bye = d.create_request(Method::Bye, via());
        assert_eq!(bye.headers.cseq().unwrap().seq, 1);
        assert_eq!(bye.headers.from().unwrap().tag(), Some("uas-tag"));
        assert_eq!(bye.headers.to().unwrap().tag(), Some("loc"));
        assert_eq!(
            bye.headers.get_all(&HeaderName::ROUTE).collect::<Vec<_>>(),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );

        // Incoming in-dialog requests from the caller.
        let incoming = |method: &str, seq: u32, extra: &str| {
            req(&format!(
                "{method} sip:bob@192.0.2.20 SIP/2.0\n\
Via: SIP/2.0/UDP pbx.example.com;branch=z9hG4bK{seq}\n\
From: <sip:pbx@example.com>;tag=loc\n\
To: <sip:bob@example.com>;tag=uas-tag\n\
Call-ID: dlg-1\n\
CSeq: {seq} {method}\n\
{extra}Content-Length: 0\n\n"
            ))
        };
        assert!(d.matches_request(&incoming("INFO", 11, "")));
        assert_eq!(
            DialogId::of_incoming_request(&incoming("INFO", 11, "")),
            Some(d.id())
        );
        d.handle_request(&incoming("INFO", 11, "")).unwrap();
        assert_eq!(
            d.handle_request(&incoming("INFO", 11, "")),
            Err(DialogError::CSeqOutOfOrder { last: 11, got: 11 })
        );
        d.handle_request(&incoming("INVITE", 12, "Contact: <sip:pbx@198.51.100.9>\n"))
            .unwrap();
        assert_eq!(d.remote_target.to_string(), "sip:pbx@198.51.100.9");
        // ACK carries the INVITE's CSeq and is not a CSeq violation.
        d.handle_request(&incoming("ACK", 12, "")).unwrap();
        let other = incoming("BYE", 13, "").clone();
        let mut wrong = other.clone();
        wrong.headers.set(HeaderName::CALL_ID, "other");
        assert_eq!(d.handle_request(&wrong), Err(DialogError::Mismatch));
        d.handle_request(&other).unwrap();
        assert_eq!(d.state, DialogState::Terminated);
        assert_eq!(
            d.handle_request(&incoming("INFO", 14, "")),
            Err(DialogError::Terminated)
        );
    }

    #[test]
    fn strict_route() {
        let invite = req(INVITE);
        let ok = ok_200(
            "Record-Route: <sip:p2.example.com>\nRecord-Route: <sip:p1.example.com>\n",
            "Contact: <sip:bob@192.0.2.20>\n",
        );
        let mut d = Dialog::uac(&invite, &ok).unwrap();
        let bye = d.create_request(Method::Bye, via());
        assert_eq!(bye.uri.to_string(), "sip:p1.example.com");
        assert_eq!(
            bye.headers.get_all(&HeaderName::ROUTE).collect::<Vec<_>>(),
            ["<sip:p2.example.com>", "<sip:bob@192.0.2.20>"]
        );
        assert_eq!(d.next_hop().to_string(), "sip:p1.example.com");
    }

    #[test]
    fn early_dialog_then_confirmed_and_failure() {
        let invite = req(INVITE);
        let ringing = resp(
            &INVITE
                .replace("INVITE sip:bob@example.com SIP/2.0", "SIP/2.0 180 Ringing")
                .replace(
                    "To: <sip:bob@example.com>",
                    "To: <sip:bob@example.com>;tag=rem",
                )
                .replace("Contact: <sip:pbx@192.0.2.1:5060>\n", ""),
        );
        let mut d = Dialog::uac(&invite, &ringing).unwrap();
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(
            d.remote_target.to_string(),
            "sip:bob@example.com",
            "no Contact: To URI"
        );
        d.handle_response(&ok_200(
            "Record-Route: <sip:p9.example.com;lr>\n",
            "Contact: <sip:bob@192.0.2.30>\n",
        ))
        .unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.remote_target.to_string(), "sip:bob@192.0.2.30");
        assert_eq!(d.route_set.len(), 1);

        let mut d = Dialog::uac(&invite, &ringing).unwrap();
        let mut busy = ok_200("", "");
        busy.status = 486;
        d.handle_response(&busy).unwrap();
        assert_eq!(d.state, DialogState::Terminated);

        assert_eq!(
            Dialog::uac(&invite, &busy),
            Err(DialogError::NotDialogCreating(486))
        );
        let mut untagged = ok_200("", "");
        untagged
            .headers
            .set(HeaderName::TO, "<sip:bob@example.com>");
        assert_eq!(
            Dialog::uac(&invite, &untagged),
            Err(DialogError::NoRemoteTag)
        );

        // 481 to an in-dialog request ends the dialog.
        let mut d = Dialog::uac(&invite, &ok_200("", "")).unwrap();
        let mut gone = ok_200("", "");
        gone.status = 481;
        gone.headers.set(HeaderName::CSEQ, "11 INFO");
        d.handle_response(&gone).unwrap();
        assert_eq!(d.state, DialogState::Terminated);
    }
}
