//! End-to-end tests of the dialplan function families (strings, math, time, files) and of
//! the Originate() and ChannelRedirect() applications, on the real binary with Local
//! channels; results are written to files with System() and FILE().

mod common;
use common::*;

const FUNCS: &str = r#"
[globals]
OUT = {DIR}

[default]
exten => 100,1,Answer()
 same => n,Set(A=one-two-three-four)
 same => n,Set(S1=${CUT(A,-,2-3)}|${CUT(A,-,1&4)}|${FIELDQTY(A,-)}|${FIELDNUM(A,-,three)}|${REGEX("^one" ${A})}|${REGEX("^two" ${A})}|${REPLACE(A,-,_)}|${FILTER(0-9,a1b2c3)}|${TOUPPER(abc)}${TOLOWER(DEF)})
 same => n,Set(S2=${SPRINTF(%05.1f-%x,3.14159,255)}|${BASE64_ENCODE(hi)}|${BASE64_DECODE(aGk=)}|${URIENCODE(a b)}|${URIDECODE(a%20b)}|${LEN(${PASSTHRU(xyz)})}|${CSV_QUOTE(x)})
 same => n,Set(L=a,b,c)
 same => n,Set(F=${SHIFT(L)})
 same => n,Set(G=${POP(L)})
 same => n,Set(PUSH(L)=z)
 same => n,Set(UNSHIFT(L)=y)
 same => n,Set(ARRAY(V1,V2)=p,q)
 same => n,Set(HASH(h,k1)=v1)
 same => n,Set(HASH(h,k2)=v2)
 same => n,Set(S3=${F}|${G}|${L}|${V1}${V2}|${HASH(h,k1)}|${HASHKEYS(h)})
 same => n,ClearHash(h)
 same => n,System(echo '${S1} ${S2} ${S3} [${HASHKEYS(h)}]' > ${OUT}/strings.txt)
 same => n,Hangup()

exten => 200,1,Answer()
 same => n,Set(X=41)
 same => n,Set(M=${MATH(3*4,i)}|${MATH(10/4)}|${MATH(255+0,h)}|${MATH(3>2)}|${INC(X)}|${DEC(X)}|${X}|${MIN(7,4)}|${MAX(4,7.5)}|${ABS(-13)}|${RAND(5,5)})
 same => n,System(echo '${M}' > ${OUT}/math.txt)
 same => n,Hangup()

exten => 300,1,Answer()
 same => n,Set(T=${STRFTIME(1141219835,America/Chicago,%Y-%m-%d %H:%M:%S)}|${STRPTIME(2006-03-01 07:30:35,America/Chicago,%Y-%m-%d %H:%M:%S)}|${IFTIME(*,*,*,*?yes:no)}|${IFTIME(*,*,*,*,UTC?"in")}|${STRFTIME(10.25,UTC,%S.%q)})
 same => n,System(echo '${T}' > ${OUT}/time.txt)
 same => n,Hangup()

exten => 400,1,Answer()
 same => n,Set(FILE(${OUT}/f.txt)=hello)
 same => n,Set(FILE(${OUT}/f.txt,,,a)=-world)
 same => n,Set(FILE(${OUT}/lines.txt,,,l,u)=first)
 same => n,Set(FILE(${OUT}/lines.txt,,,al)=second)
 same => n,Set(Y=${FILE(${OUT}/f.txt)}|${FILE(${OUT}/f.txt,0,5)}|${STAT(e,${OUT}/f.txt)}|${STAT(s,${OUT}/f.txt)}|${STAT(d,${OUT})}|${STAT(e,${OUT}/nope)}|${FILTER(a-z,${FILE(${OUT}/lines.txt,1,1,l)})}|${FILE_COUNT_LINE(${OUT}/lines.txt)})
 same => n,System(echo '${Y}' > ${OUT}/files.txt)
 same => n,Hangup()
"#;

fn run_and_read(pbx: &TestPbx, exten: &str, file: &str) -> String {
    let r = pbx.rx(&format!(
        "channel originate Local/{exten}@default application Wait 1"
    ));
    assert!(r.trim().is_empty(), "originate output: {r}");
    let got =
        wait_file(&pbx.path(file), 10).unwrap_or_else(|| panic!("no {file}; log:\n{}", pbx.log()));
    got.trim_end().to_string()
}

#[test]
fn function_families() {
    let pbx = TestPbx::start(&[("extensions.conf", FUNCS)]);
    assert_eq!(
        run_and_read(&pbx, "100", "strings.txt"),
        "two-three|one-four|4|3|1|0|one_two_three_four|123|ABCdef \
         003.1-ff|aGk=|hi|a%20b|a b|3|\"x\" \
         a|c|y,b,z|pq|v1|k2,k1 []",
        "log:\n{}",
        pbx.log()
    );
    assert_eq!(
        run_and_read(&pbx, "200", "math.txt"),
        "12|2.500000|ff|TRUE|42|41|41|4|7.500000|13|5",
        "log:\n{}",
        pbx.log()
    );
    assert_eq!(
        run_and_read(&pbx, "300", "time.txt"),
        "2006-03-01 07:30:35|1141219835|yes|in|10.250",
        "log:\n{}",
        pbx.log()
    );
    assert_eq!(
        run_and_read(&pbx, "400", "files.txt"),
        "hello-world|hello|1|11|1|0|second|2",
        "log:\n{}",
        pbx.log()
    );
    assert_eq!(
        std::fs::read_to_string(pbx.path("lines.txt")).unwrap(),
        "first\nsecond\n"
    );
    assert!(pbx.rx("core show functions").contains("SPRINTF"));
    assert!(
        pbx.wait_no_channels(10),
        "channels left: {}",
        pbx.rx("core show channels")
    );
}

const APPS: &str = r#"
[globals]
OUT = {DIR}

[default]
exten => 500,1,Answer()
 same => n,Originate(Local/510@default,exten,default,520,1,5)
 same => n,Set(S=${ORIGINATE_STATUS})
 same => n,Wait(0.3)
 same => n,ChannelRedirect(${GLOBAL(TARGET)},default,530,1)
 same => n,Set(C=${CHANNELREDIRECT_STATUS})
 same => n,ChannelRedirect(NoSuch/chan,1)
 same => n,Set(N=${CHANNELREDIRECT_STATUS})
 same => n,Originate(Bogus/x,app,Wait,1)
 same => n,Set(F2=${ORIGINATE_STATUS})
 same => n,Originate(Local/599@default,app,Wait,1)
 same => n,Set(F3=${ORIGINATE_STATUS})
 same => n,Originate(Local/540@default,app,Wait,1)
 same => n,System(echo '${S} ${C} ${N} ${F2} ${F3} ${ORIGINATE_STATUS}' > ${OUT}/orig.txt)
 same => n,Hangup()

exten => 510,1,Answer()
 same => n,Set(GLOBAL(TARGET)=${CHANNEL})
 same => n,Wait(10)
 same => n,System(echo not-redirected > ${OUT}/redirect.txt)
 same => n,Hangup()

exten => 520,1,Wait(10)
 same => n,Hangup()

exten => 530,1,System(echo redirected-to-${EXTEN} > ${OUT}/redirect.txt)
 same => n,Hangup()

exten => 540,1,Busy()
"#;

#[test]
fn originate_and_channel_redirect() {
    let pbx = TestPbx::start(&[("extensions.conf", APPS)]);
    let r = pbx.rx("channel originate Local/500@default application Wait 20");
    assert!(r.trim().is_empty(), "originate output: {r}");
    let got = wait_file(&pbx.path("orig.txt"), 15)
        .unwrap_or_else(|| panic!("no orig.txt; log:\n{}", pbx.log()));
    assert_eq!(
        got.trim(),
        "SUCCESS SUCCESS NOCHANNEL FAILED HANGUP BUSY",
        "log:\n{}",
        pbx.log()
    );
    let red = wait_file(&pbx.path("redirect.txt"), 10)
        .unwrap_or_else(|| panic!("no redirect.txt; log:\n{}", pbx.log()));
    assert_eq!(red.trim(), "redirected-to-530");
    pbx.rx("channel request hangup all");
    assert!(
        pbx.wait_no_channels(10),
        "channels left: {}",
        pbx.rx("core show channels")
    );
}
