package sandbox

// DialBeneathForTest is Dial for a directory handle and any name, checked
// or not by PluginToHost.
var DialBeneathForTest = dialBeneath
