package device

import (
	"strings"
	"testing"
	"unicode/utf8"
)

var uaCases = []struct {
	name, ua            string
	browser, os, device string
}{
	{"chrome windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "Windows", TypeDesktop},
	{"chrome macos", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "macOS", TypeDesktop},
	{"edge windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.2535.92", "Edge 125", "Windows", TypeDesktop},
	{"legacy edge", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041", "Edge 18", "Windows", TypeDesktop},
	{"firefox windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox 128", "Windows", TypeDesktop},
	{"firefox linux", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox 128", "Linux", TypeDesktop},
	{"safari macos", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", "Safari 17", "macOS", TypeDesktop},
	{"opera windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 OPR/111.0.0.0", "Opera 111", "Windows", TypeDesktop},
	{"internet explorer 11", "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", "Internet Explorer 11", "Windows", TypeDesktop},
	{"chromeos", "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "ChromeOS", TypeDesktop},
	{"iphone safari", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "Safari 17", "iOS", TypeMobile},
	{"iphone chrome", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1", "Chrome 126", "iOS", TypeMobile},
	{"iphone firefox", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/128.0 Mobile/15E148 Safari/605.1.15", "Firefox 128", "iOS", TypeMobile},
	{"ipad safari", "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "Safari 17", "iOS", TypeTablet},
	{"android phone chrome", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "Chrome 126", "Android", TypeMobile},
	{"android tablet chrome", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "Android", TypeTablet},
	{"android samsung internet", "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36", "Samsung Internet 25", "Android", TypeMobile},
	{"android firefox", "Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0", "Firefox 128", "Android", TypeMobile},
	{"android edge", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36 EdgA/126.0.0.0", "Edge 126", "Android", TypeMobile},
	{"android webview", "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240605.024; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36", "Chrome 126", "Android", TypeMobile},
	{"cubot phone is no bot", "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "Chrome 126", "Android", TypeMobile},
	{"curl", "curl/8.5.0", "curl 8", "", TypeBot},
	{"go http client", "Go-http-client/1.1", "Go-http-client 1", "", TypeBot},
	{"googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot 2", "", TypeBot},
	{"googlebot smartphone", "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot 2", "Android", TypeBot},
	{"unnamed crawler", "Mozilla/5.0 (compatible; ExampleCrawler/1.0)", "", "", TypeBot},
	{"empty", "", "", "", TypeUnknown},
	{"blank", "  \t ", "", "", TypeUnknown},
	{"garbage", "!!!@@@### \x00\xff\xfe", "", "", TypeUnknown},
	{"bare mozilla", "Mozilla/5.0", "", "", TypeUnknown},
	{"no version digits", "Mozilla/5.0 (Windows NT 10.0) Firefox/", "Firefox", "Windows", TypeDesktop},
	{"huge version", "Mozilla/5.0 (X11; Linux x86_64) Chrome/1234567890.0", "Chrome 1234", "Linux", TypeDesktop},
	{"10 KB with browser past the scan limit", "Mozilla/5.0 (Windows NT 10.0) " + strings.Repeat("A", 10<<10) + " Chrome/126.0", "", "Windows", TypeDesktop},
	{"10 KB garbage", strings.Repeat("\xff(;/", 10<<10/4), "", "", TypeUnknown},
}

func TestParse(t *testing.T) {
	for _, c := range uaCases {
		t.Run(c.name, func(t *testing.T) {
			browser, os, typ := Parse(c.ua)
			if browser != c.browser || os != c.os || typ != c.device {
				t.Errorf("Parse = (%q, %q, %q), want (%q, %q, %q)", browser, os, typ, c.browser, c.os, c.device)
			}
		})
	}
}

func TestParseAllocations(t *testing.T) {
	// A desktop browser costs at most the one string that joins name and
	// version; an unknown client costs nothing.
	for _, c := range []struct {
		ua  string
		max float64
	}{
		{uaCases[0].ua, 1},
		{"", 0},
		{strings.Repeat("x", 10<<10), 0},
	} {
		if got := testing.AllocsPerRun(100, func() { Parse(c.ua) }); got > c.max {
			t.Errorf("Parse(%.20q...) allocates %v times, want at most %v", c.ua, got, c.max)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range uaCases {
		f.Add(c.ua)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		browser, os, typ := Parse(ua)
		switch typ {
		case TypeDesktop, TypeMobile, TypeTablet, TypeBot, TypeUnknown:
		default:
			t.Fatalf("Parse(%q) device type %q", ua, typ)
		}
		// Results are made of fixed names and ASCII digits, so they are safe
		// to store and show whatever the input was.
		if !utf8.ValidString(browser) || !utf8.ValidString(os) || len(browser) > 64 || len(os) > 64 {
			t.Fatalf("Parse(%q) = %q, %q", ua, browser, os)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Parse(uaCases[i%len(uaCases)].ua)
	}
}

func BenchmarkParseChrome(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Parse(uaCases[0].ua)
	}
}
