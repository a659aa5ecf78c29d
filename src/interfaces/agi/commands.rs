//! The AGI command table: every command Asterisk's `res_agi` (and `app_stack`'s GOSUB)
//! registers, with its syntax and usage text, whether it may run on a hung-up channel, and
//! the argument counts outside which the reply is `520` (usage).
//!
//! Lookup follows Asterisk's `find_command`: the command's words are compared
//! case-insensitively with the first tokens of the line; extra tokens are arguments.

/// One AGI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase words naming the command (`["get", "full", "variable"]`).
    pub words: &'static [&'static str],
    /// The syntax line, `GET FULL VARIABLE <variablename> [channel name]`.
    pub syntax: &'static str,
    /// A one-line description.
    pub summary: &'static str,
    /// Allowed on a dead (hung-up) channel.
    pub dead_ok: bool,
    /// Token count (command words included) below which the usage reply is sent.
    pub min_argc: usize,
    /// Token count above which the usage reply is sent (`None`: no limit).
    pub max_argc: Option<usize>,
}

impl CommandSpec {
    /// The command name in upper case (`GET FULL VARIABLE`).
    pub fn name(&self) -> String {
        self.words
            .iter()
            .map(|w| w.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The usage text sent between the `520-` and `520 ` lines; ends with a newline.
    pub fn usage(&self) -> String {
        format!(" Usage: {}\n {}\n", self.syntax, self.summary)
    }

    /// Whether `argc` tokens (command words included) are acceptable.
    pub fn argc_ok(&self, argc: usize) -> bool {
        argc >= self.min_argc && self.max_argc.is_none_or(|m| argc <= m)
    }

    fn matches(&self, argv: &[String]) -> bool {
        argv.len() >= self.words.len()
            && self
                .words
                .iter()
                .zip(argv)
                .all(|(w, a)| a.eq_ignore_ascii_case(w))
    }
}

macro_rules! cmd {
    ([$($w:literal),+], $syntax:literal, $summary:literal, dead: $dead:literal, argc: $min:literal ..= $max:literal) => {
        CommandSpec { words: &[$($w),+], syntax: $syntax, summary: $summary, dead_ok: $dead, min_argc: $min, max_argc: Some($max) }
    };
    ([$($w:literal),+], $syntax:literal, $summary:literal, dead: $dead:literal, argc: $min:literal ..) => {
        CommandSpec { words: &[$($w),+], syntax: $syntax, summary: $summary, dead_ok: $dead, min_argc: $min, max_argc: None }
    };
}

/// Every AGI command, in registration order.
pub static COMMANDS: &[CommandSpec] = &[
    cmd!(["answer"], "ANSWER", "Answers the channel if it is not already up; result=0 on success, -1 on failure.", dead: false, argc: 1..),
    cmd!(["asyncagi", "break"], "ASYNCAGI BREAK", "Leaves Async AGI and returns the channel to the dialplan.", dead: true, argc: 2..),
    cmd!(["channel", "status"], "CHANNEL STATUS [channelname]", "Returns the state (0-7) of the given channel, or of this channel.", dead: false, argc: 2..=3),
    cmd!(["control", "stream", "file"], "CONTROL STREAM FILE <filename> <escape_digits> [skipms] [ffchar] [rewchr] [pausechr] [offsetms]", "Plays a file that the caller can fast-forward, rewind and pause; returns the digit pressed, 0 or -1.", dead: false, argc: 5..=10),
    cmd!(["database", "del"], "DATABASE DEL <family> <key>", "Deletes a key from the database; result=1 on success, 0 otherwise.", dead: true, argc: 4..=4),
    cmd!(["database", "deltree"], "DATABASE DELTREE <family> [keytree]", "Deletes a family or a key tree from the database; result=1 on success, 0 otherwise.", dead: true, argc: 3..=4),
    cmd!(["database", "get"], "DATABASE GET <family> <key>", "Reads a key from the database; result=1 (value) if set, 0 otherwise.", dead: true, argc: 4..=4),
    cmd!(["database", "put"], "DATABASE PUT <family> <key> <value>", "Adds or updates a key in the database; result=1 on success, 0 otherwise.", dead: true, argc: 5..=5),
    cmd!(["exec"], "EXEC <application> <options>", "Runs a dialplan application; returns what it returns, or -2 if it does not exist.", dead: true, argc: 2..),
    cmd!(["get", "data"], "GET DATA <file> [timeout] [maxdigits]", "Plays a file and collects DTMF digits; result=<digits>, with (timeout) if it timed out.", dead: false, argc: 3..=5),
    cmd!(["get", "full", "variable"], "GET FULL VARIABLE <variablename> [channel name]", "Evaluates an expression with functions and variables; result=1 (value) or 0.", dead: true, argc: 4..=5),
    cmd!(["get", "option"], "GET OPTION <filename> <escape_digits> [timeout]", "Like STREAM FILE, then waits up to timeout ms for a digit.", dead: false, argc: 4..=5),
    cmd!(["get", "variable"], "GET VARIABLE <variablename>", "Reads a channel variable; result=1 (value) if set, 0 otherwise.", dead: true, argc: 3..=3),
    cmd!(["gosub"], "GOSUB <context> <extension> <priority> [optional-argument]", "Runs a dialplan subroutine and returns here when it returns.", dead: false, argc: 4..=5),
    cmd!(["hangup"], "HANGUP [channelname]", "Hangs up the given channel, or this channel; result=1 on success, -1 if not found.", dead: false, argc: 1..=2),
    cmd!(["noop"], "NOOP", "Does nothing; result=0.", dead: true, argc: 1..),
    cmd!(["receive", "char"], "RECEIVE CHAR <timeout>", "Receives one character of text; result=<code>, 0 if unsupported, -1 on hangup.", dead: false, argc: 3..=3),
    cmd!(["receive", "text"], "RECEIVE TEXT <timeout>", "Receives a string of text; result=1 (text) or -1.", dead: false, argc: 3..=3),
    cmd!(["record", "file"], "RECORD FILE <filename> <format> <escape_digits> <timeout> [offset samples] [BEEP] [s=silence]", "Records until a digit, the timeout (ms, -1 for none) or the given seconds of silence.", dead: false, argc: 6..),
    cmd!(["say", "alpha"], "SAY ALPHA <number> <escape_digits>", "Spells a string; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=5),
    cmd!(["say", "digits"], "SAY DIGITS <number> <escape_digits>", "Says a digit string; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=4),
    cmd!(["say", "number"], "SAY NUMBER <number> <escape_digits> [gender]", "Says a number; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=5),
    cmd!(["say", "phonetic"], "SAY PHONETIC <string> <escape_digits>", "Spells a string with the phonetic alphabet; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=4),
    cmd!(["say", "date"], "SAY DATE <date> <escape_digits>", "Says the date of a Unix time; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=4),
    cmd!(["say", "time"], "SAY TIME <time> <escape_digits>", "Says the time of a Unix time; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=4),
    cmd!(["say", "datetime"], "SAY DATETIME <time> <escape_digits> [format] [timezone]", "Says a Unix time in the given format and time zone; returns the digit pressed, 0 or -1.", dead: false, argc: 4..=6),
    cmd!(["send", "image"], "SEND IMAGE <image>", "Sends an image on channels that support it; result=0 or -1.", dead: false, argc: 3..=3),
    cmd!(["send", "text"], "SEND TEXT <text to send>", "Sends text on channels that support it; result=0 or -1.", dead: false, argc: 3..=3),
    cmd!(["set", "autohangup"], "SET AUTOHANGUP <time>", "Hangs the channel up after the given seconds (0 cancels); result=0.", dead: false, argc: 3..=3),
    cmd!(["set", "callerid"], "SET CALLERID <number>", "Changes the caller ID of the channel; result=1.", dead: false, argc: 3..=3),
    cmd!(["set", "context"], "SET CONTEXT <desired context>", "Sets the context to continue in after AGI; result=0.", dead: false, argc: 3..=3),
    cmd!(["set", "extension"], "SET EXTENSION <new extension>", "Sets the extension to continue in after AGI; result=0.", dead: false, argc: 3..=3),
    cmd!(["set", "music"], "SET MUSIC <on|off> [class]", "Turns music on hold on or off; result=0.", dead: false, argc: 3..=4),
    cmd!(["set", "priority"], "SET PRIORITY <priority>", "Sets the priority (or label) to continue at after AGI; result=0.", dead: false, argc: 3..=3),
    cmd!(["set", "variable"], "SET VARIABLE <variablename> <value>", "Sets a channel variable; result=1.", dead: true, argc: 4..=4),
    cmd!(["stream", "file"], "STREAM FILE <filename> <escape_digits> [sample offset]", "Plays a file; returns the digit pressed or 0, and endpos, or -1.", dead: false, argc: 4..=5),
    cmd!(["tdd", "mode"], "TDD MODE <on|off>", "Turns TDD mode on or off on channels that support it; result=1 or 0.", dead: false, argc: 3..=3),
    cmd!(["verbose"], "VERBOSE <message> <level>", "Writes a message to the verbose log at the given level (1-4); result=1.", dead: true, argc: 2..),
    cmd!(["wait", "for", "digit"], "WAIT FOR DIGIT <timeout>", "Waits up to timeout ms (-1 forever) for a digit; result=<code>, 0 on timeout, -1.", dead: false, argc: 4..=4),
    cmd!(["speech", "create"], "SPEECH CREATE <engine>", "Creates a speech recognizer on the channel; result=1 or 0.", dead: false, argc: 3..=3),
    cmd!(["speech", "set"], "SPEECH SET <name> <value>", "Sets a recognizer setting; result=1.", dead: false, argc: 4..=4),
    cmd!(["speech", "destroy"], "SPEECH DESTROY", "Destroys the recognizer; result=1 or 0.", dead: true, argc: 2..),
    cmd!(["speech", "load", "grammar"], "SPEECH LOAD GRAMMAR <grammar name> <path to grammar>", "Loads a grammar; result=1 or 0.", dead: false, argc: 5..=5),
    cmd!(["speech", "unload", "grammar"], "SPEECH UNLOAD GRAMMAR <grammar name>", "Unloads a grammar; result=1 or 0.", dead: true, argc: 4..=4),
    cmd!(["speech", "activate", "grammar"], "SPEECH ACTIVATE GRAMMAR <grammar name>", "Activates a grammar; result=1 or 0.", dead: false, argc: 4..=4),
    cmd!(["speech", "deactivate", "grammar"], "SPEECH DEACTIVATE GRAMMAR <grammar name>", "Deactivates a grammar; result=1 or 0.", dead: false, argc: 4..=4),
    cmd!(["speech", "recognize"], "SPEECH RECOGNIZE <prompt> <timeout> [offset]", "Plays a prompt and recognizes speech; result=1 (speech|digit|timeout|hangup) with results and endpos.", dead: false, argc: 4..=5),
];

/// Find the command named by the first tokens of `argv` (case-insensitive).
pub fn find_command(argv: &[String]) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.matches(argv))
}

/// Find a command by its full name, such as `"stream file"` (for documentation/CLI).
pub fn command_by_name(name: &str) -> Option<&'static CommandSpec> {
    let words: Vec<String> = name.split_whitespace().map(str::to_string).collect();
    COMMANDS
        .iter()
        .find(|c| c.words.len() == words.len() && c.matches(&words))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn every_spec_command_is_present() {
        for name in [
            "answer",
            "asyncagi break",
            "channel status",
            "control stream file",
            "database del",
            "database deltree",
            "database get",
            "database put",
            "exec",
            "get data",
            "get full variable",
            "get option",
            "get variable",
            "gosub",
            "hangup",
            "noop",
            "receive char",
            "receive text",
            "record file",
            "say alpha",
            "say digits",
            "say number",
            "say phonetic",
            "say date",
            "say time",
            "say datetime",
            "send image",
            "send text",
            "set autohangup",
            "set callerid",
            "set context",
            "set extension",
            "set music",
            "set priority",
            "set variable",
            "stream file",
            "tdd mode",
            "verbose",
            "wait for digit",
            "speech create",
            "speech set",
            "speech destroy",
            "speech load grammar",
            "speech unload grammar",
            "speech activate grammar",
            "speech deactivate grammar",
            "speech recognize",
        ] {
            let c = command_by_name(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(
                c.syntax.to_ascii_lowercase().starts_with(name),
                "{name}: {}",
                c.syntax
            );
            assert!(c.min_argc >= c.words.len(), "{name}");
        }
    }

    #[test]
    fn lookup_is_case_insensitive_and_prefix_based() {
        assert_eq!(
            find_command(&argv("Stream FILE hello \"\""))
                .unwrap()
                .name(),
            "STREAM FILE"
        );
        assert_eq!(
            find_command(&argv("get full variable ${X}"))
                .unwrap()
                .name(),
            "GET FULL VARIABLE"
        );
        assert_eq!(
            find_command(&argv("GET VARIABLE X")).unwrap().name(),
            "GET VARIABLE"
        );
        assert!(find_command(&argv("GET")).is_none(), "incomplete command");
        assert!(find_command(&argv("STREAMFILE x")).is_none());
        assert!(find_command(&[]).is_none());
        assert!(find_command(&argv("GET / HTTP/1.1")).is_none());
    }

    #[test]
    fn dead_flags() {
        for (name, dead) in [
            ("set variable", true),
            ("get variable", true),
            ("get full variable", true),
            ("exec", true),
            ("database put", true),
            ("verbose", true),
            ("noop", true),
            ("asyncagi break", true),
            ("speech destroy", true),
            ("answer", false),
            ("stream file", false),
            ("hangup", false),
            ("gosub", false),
        ] {
            assert_eq!(command_by_name(name).unwrap().dead_ok, dead, "{name}");
        }
    }

    #[test]
    fn argc_ranges() {
        let sf = command_by_name("stream file").unwrap();
        assert!(!sf.argc_ok(3));
        assert!(sf.argc_ok(4));
        assert!(sf.argc_ok(5));
        assert!(!sf.argc_ok(6));
        assert!(command_by_name("record file").unwrap().argc_ok(9));
        assert!(command_by_name("exec").unwrap().argc_ok(40));
    }

    #[test]
    fn usage_text_shape() {
        for c in COMMANDS {
            let u = c.usage();
            assert!(u.ends_with('\n'));
            assert!(
                u.lines().all(|l| !l.starts_with("520")),
                "usage must not look like a status line"
            );
            assert!(u.contains(c.syntax));
        }
    }
}
